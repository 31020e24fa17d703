package x509_test

import (
	"crypto/tls"
	"net/http"

	x509rot "github.com/nebula-credential/nebula-credential/rotator/x509"
)

// A Go HTTPS server whose certificate rotates without a restart: credentials
// with the deploy target {"type": "provider", "name": "web"} land here.
func ExampleProvider() {
	web := x509rot.NewProvider()
	_ = x509rot.New(x509rot.Config{Providers: map[string]*x509rot.Provider{"web": web}})
	srv := &http.Server{
		Addr:      ":8443",
		TLSConfig: &tls.Config{GetCertificate: web.GetCertificate},
	}
	_ = srv // srv.ListenAndServeTLS("", "") once the first certificate is set
}
