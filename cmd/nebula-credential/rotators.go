package main

import (
	credential "github.com/nebula-credential/nebula-credential"
	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/rotator/apikey"
	"github.com/nebula-credential/nebula-credential/rotator/mysql"
	"github.com/nebula-credential/nebula-credential/rotator/oauth2"
	"github.com/nebula-credential/nebula-credential/rotator/postgres"
	"github.com/nebula-credential/nebula-credential/rotator/redis"
	"github.com/nebula-credential/nebula-credential/rotator/x509"
)

// rotators wires the built-in rotators by credential type. The generic
// rotator is registered by the Manager itself.
func rotators() *rotator.Registry {
	reg := rotator.NewRegistry()
	reg.Register(string(credential.Postgres), postgres.New(postgres.Config{}))
	reg.Register(string(credential.MySQL), mysql.New(mysql.Config{}))
	reg.Register(string(credential.Redis), redis.New(redis.Config{}))
	reg.Register(string(credential.APIKey), apikey.New(apikey.Config{}))
	reg.Register(string(credential.OAuth2), oauth2.New(oauth2.Config{}))
	reg.Register(string(credential.Certificate), x509.New(x509.Config{}))
	return reg
}
