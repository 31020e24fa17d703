// Package apikey rotates credentials of HTTP API-key services, described
// declaratively by the credential's non-secret fields (a Spec).
//
// Reach for New to get the rotator for credential type "api_key". Two shapes are
// supported:
//
//   - Dual (Spec.Create): the provider mints a second key during Stage, both keys
//     work during grace, and Retire revokes the old key by its ID. Create carries
//     "Idempotency-Key: <rotation id>", so a Stage retried after a crash gets the
//     same key back, and Cleanup (with Spec.List) revokes keys that were minted
//     but never recorded.
//   - InPlace (Spec.Set): one password per user (the RabbitMQ management API).
//     Stage generates the password, Apply sets it, Revert sets the old one back.
//     There is a short window where clients holding the old password fail.
//
// The secret field is "key"; the non-secret field "key_id" holds the provider's
// ID of the key. Errors never contain a key: every message is redacted of the
// secrets a call carries, in every encoding a server could echo them in.
package apikey

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

// Secret and field names.
const (
	// SecretKey is the secret field holding the key (or password).
	SecretKey = "key"
	// FieldKeyID is the non-secret field holding the provider's ID of the key.
	FieldKeyID = "key_id"
)

// Config configures the rotator. The zero value means the defaults.
type Config struct {
	// HTTPClient sends every request. Default: a client with a 30 s timeout.
	HTTPClient *http.Client
	// Now is the clock, used to read Retry-After dates. Default: time.Now.
	Now func() time.Time
	// UserAgent is sent with every request. Default: "nebula-credential".
	UserAgent string
}

// Validate reports an unusable configuration.
func (c Config) Validate() error {
	if c.HTTPClient != nil && c.HTTPClient.Timeout < 0 {
		return errors.New("apikey: negative HTTP client timeout")
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.UserAgent == "" {
		c.UserAgent = "nebula-credential"
	}
	return c
}

// Rotator rotates API keys. It is safe for concurrent use.
type Rotator struct {
	cfg Config
}

var (
	_ rotator.Rotator         = (*Rotator)(nil)
	_ rotator.Cleaner         = (*Rotator)(nil)
	_ rotator.StrategyChooser = (*Rotator)(nil)
)

// New returns a rotator; the zero Config means the defaults.
func New(cfg Config) *Rotator { return &Rotator{cfg: cfg.withDefaults()} }

// Capabilities: dual for minted keys, in place for set passwords; the provider
// mints, and Cleanup finds orphans where the spec has a list call.
func (r *Rotator) Capabilities() rotator.Capabilities {
	return rotator.Capabilities{
		Strategies: []rotator.Strategy{rotator.Dual, rotator.InPlace},
		Mints:      true,
		Cleanup:    true,
	}
}

// StrategiesFor implements rotator.StrategyChooser: a spec with a create call
// rotates dual, one with a set call in place.
func (r *Rotator) StrategiesFor(c rotator.Credential) []rotator.Strategy {
	s, err := specOf(c)
	if err != nil {
		return r.Capabilities().Strategies
	}
	return []rotator.Strategy{s.mode()}
}

// authKey is what authenticates a call.
type authKey struct {
	key, keyID, username string
}

// auth resolves Spec.AuthCredential, or falls back to the key of fallback.
func (r *Rotator) auth(ctx context.Context, s *Spec, res rotator.Resolver, fallback rotator.Credential) (authKey, error) {
	if s.AuthCredential == "" {
		return authKey{key: fallback.Secret[SecretKey].Reveal(), keyID: fallback.String(FieldKeyID), username: fallback.String("username")}, nil
	}
	if res == nil {
		return authKey{}, rotator.Errorf(rotator.ClassConfig, "resolve auth credential", "auth_credential %q is set but no resolver was given", s.AuthCredential)
	}
	c, err := res.Resolve(ctx, s.AuthCredential)
	if err != nil {
		return authKey{}, &rotator.Error{Class: rotator.ClassOf(err), Op: "resolve auth credential", Err: fmt.Errorf("%q: %w", s.AuthCredential, err)}
	}
	k := c.Secret[SecretKey]
	if k.IsZero() {
		k = c.Secret["password"]
	}
	if k.IsZero() {
		return authKey{}, rotator.Errorf(rotator.ClassConfig, "resolve auth credential", "credential %q has no secret field %q or \"password\"", s.AuthCredential, SecretKey)
	}
	return authKey{key: k.Reveal(), keyID: c.String(FieldKeyID), username: c.String("username")}, nil
}

// callVars builds the template values for a call about subject, authenticated by a.
func callVars(subject rotator.Credential, key, keyID string, a authKey, rotationID int64) vars {
	v := vars{
		"key": key, "key_id": keyID,
		"auth_key": a.key, "auth_key_id": a.keyID, "auth_username": a.username,
		"credential_id": subject.ID, "rotation_id": "",
	}
	if rotationID != 0 {
		v["rotation_id"] = strconv.FormatInt(rotationID, 10)
	}
	for k, f := range subject.Fields {
		switch f := f.(type) {
		case string:
			v["fields."+k] = f
		case float64:
			v["fields."+k] = strconv.FormatFloat(f, 'f', -1, 64)
		case int, int64, bool:
			v["fields."+k] = fmt.Sprint(f)
		}
	}
	return v
}

func checkStrategy(s *Spec, st rotator.Strategy) error {
	if st != "" && st != s.mode() {
		return rotator.Errorf(rotator.ClassConfig, "strategy", "this credential's spec rotates %s (it has %s), not %s", s.mode(), map[rotator.Strategy]string{rotator.Dual: "create", rotator.InPlace: "set"}[s.mode()], st)
	}
	return nil
}

// Stage mints a new key (Dual) or generates a new password (InPlace). The Dual
// create call carries req.IdempotencyKey as its Idempotency-Key: calling Stage again
// for the same rotation returns the same key from services that honour it.
// Stage does not change what the service accepts for consumers beyond adding a
// second key.
func (r *Rotator) Stage(ctx context.Context, req rotator.StageRequest) (rotator.StageResponse, error) {
	s, err := specOf(req.Current)
	if err != nil {
		return rotator.StageResponse{}, err
	}
	if err := checkStrategy(s, req.Strategy); err != nil {
		return rotator.StageResponse{}, err
	}
	if s.mode() == rotator.InPlace {
		pw, err := s.PasswordPolicy.Generate()
		if err != nil {
			return rotator.StageResponse{}, rotator.Wrap(rotator.ClassConfig, "generate password", err)
		}
		return rotator.StageResponse{Secret: secret.Map{SecretKey: pw}}, nil
	}
	a, err := r.auth(ctx, s, req.Resolver, req.Current)
	if err != nil {
		return rotator.StageResponse{}, err
	}
	idem := req.IdempotencyKey
	if idem == "" {
		idem = req.CredentialKey()
	}
	cur := req.Current.Secret[SecretKey].Reveal()
	c := call{
		op:      "create key",
		req:     s.Create,
		vars:    callVars(req.Current, cur, req.Current.String(FieldKeyID), a, req.RotationID),
		secrets: []string{cur, a.key},
		headers: map[string]string{"Idempotency-Key": idem},
	}
	resp, err := r.do(ctx, c)
	if err != nil {
		return rotator.StageResponse{}, err
	}
	doc, err := decodeJSON(resp.body)
	if err != nil {
		return rotator.StageResponse{}, rotator.Errorf(rotator.ClassUnknown, "create key",
			"status %d but the response is not JSON; a key may have been created: run cleanup or revoke it at the provider", resp.status)
	}
	id, idErr := lookupString(doc, s.Create.KeyIDPointer)
	key, keyErr := lookupString(doc, s.Create.KeyPointer)
	if keyErr != nil || idErr != nil {
		// The new key is unusable. Revoke it now if its ID is known, so no live
		// orphan is left behind.
		c.secrets = append(c.secrets, key)
		if idErr == nil {
			if rerr := r.revoke(ctx, s, req.Current, id, a, c.secrets); rerr != nil {
				return rotator.StageResponse{}, rotator.Errorf(rotator.ClassUnknown, "create key",
					"key %s was created but the response lacks %s; revoking it failed too (%v): revoke it at the provider", id, s.Create.KeyPointer, rerr)
			}
			return rotator.StageResponse{}, rotator.Errorf(rotator.ClassConfig, "create key",
				"the response has no key at %s (key %s was revoked again): check create.key_pointer", s.Create.KeyPointer, id)
		}
		return rotator.StageResponse{}, rotator.Errorf(rotator.ClassConfig, "create key",
			"the response has no key ID at %s: check create.key_id_pointer; a key was created: run cleanup or revoke it at the provider", s.Create.KeyIDPointer)
	}
	if key == cur {
		return rotator.StageResponse{}, rotator.Errorf(rotator.ClassUnknown, "create key", "the service returned the current key instead of a new one")
	}
	return rotator.StageResponse{
		Secret: secret.Map{SecretKey: secret.New(key)},
		Fields: map[string]any{FieldKeyID: id},
	}, nil
}

// Apply is a no-op for Dual (the minted key is live already). InPlace sets the
// pending password, unless it already works.
func (r *Rotator) Apply(ctx context.Context, req rotator.ApplyRequest) (rotator.ApplyResponse, error) {
	s, err := specOf(req.Current)
	if err != nil {
		return rotator.ApplyResponse{}, err
	}
	if err := checkStrategy(s, req.Strategy); err != nil {
		return rotator.ApplyResponse{}, err
	}
	if s.mode() == rotator.Dual {
		return rotator.ApplyResponse{}, nil
	}
	if ok, err := r.works(ctx, s, req.Pending); err != nil {
		return rotator.ApplyResponse{}, err
	} else if ok {
		return rotator.ApplyResponse{Skipped: true}, nil
	}
	if err := r.set(ctx, s, req.Pending, req.Current, req.Resolver); err != nil {
		return rotator.ApplyResponse{}, err
	}
	return rotator.ApplyResponse{}, nil
}

// set sets the key of target, authenticated by the auth credential or by the
// key of authBy.
func (r *Rotator) set(ctx context.Context, s *Spec, target, authBy rotator.Credential, res rotator.Resolver) error {
	a, err := r.auth(ctx, s, res, authBy)
	if err != nil {
		return err
	}
	key := target.Secret[SecretKey].Reveal()
	if key == "" {
		return rotator.Errorf(rotator.ClassConfig, "set password", "the credential has no secret %q", SecretKey)
	}
	resp, err := r.do(ctx, call{
		op:      "set password",
		req:     s.Set,
		vars:    callVars(target, key, target.String(FieldKeyID), a, 0),
		secrets: []string{key, a.key, authBy.Secret[SecretKey].Reveal()},
	})
	var e *rotator.Error
	if resp != nil && (resp.status == http.StatusBadRequest || resp.status == http.StatusUnprocessableEntity) && errors.As(err, &e) {
		// The service refused the password itself (a policy); a new one may pass.
		e.Class = rotator.ClassRejected
	}
	return err
}

// works reports whether c's key passes the verify call; a refusal is false, any
// other failure an error.
func (r *Rotator) works(ctx context.Context, s *Spec, c rotator.Credential) (bool, error) {
	_, err := r.verify(ctx, s, c)
	switch {
	case err == nil:
		return true, nil
	case rotator.ClassOf(err) == rotator.ClassRejected:
		return false, nil
	default:
		return false, err
	}
}

func (r *Rotator) verify(ctx context.Context, s *Spec, c rotator.Credential) (string, error) {
	key := c.Secret[SecretKey].Reveal()
	if key == "" {
		return "", rotator.Errorf(rotator.ClassRejected, "verify key", "the credential has no secret %q", SecretKey)
	}
	resp, err := r.do(ctx, call{
		op:      "verify key",
		req:     s.Verify,
		vars:    callVars(c, key, c.String(FieldKeyID), authKey{key: key, keyID: c.String(FieldKeyID), username: c.String("username")}, 0),
		secrets: []string{key},
	})
	if err != nil {
		// The service refused the key under test: the secret is wrong, not the
		// rotator's own credentials.
		var e *rotator.Error
		if errors.As(err, &e) && (e.Class == rotator.ClassAuth || e.Class == rotator.ClassPermission) {
			e.Class, e.Privilege = rotator.ClassRejected, ""
		}
		return "", err
	}
	return fmt.Sprintf("%s %s answered %d", s.Verify.method(), s.Verify.URL, resp.status), nil
}

// Verify calls the verify request with the credential's key and checks the
// status. A 401 or 403 is ClassRejected. It changes nothing.
func (r *Rotator) Verify(ctx context.Context, req rotator.VerifyRequest) (rotator.VerifyResponse, error) {
	s, err := specOf(req.Credential)
	if err != nil {
		return rotator.VerifyResponse{}, err
	}
	detail, err := r.verify(ctx, s, req.Credential)
	if err != nil {
		return rotator.VerifyResponse{}, err
	}
	// Templates are printed unrendered: the URL of a verify call may carry the key.
	return rotator.VerifyResponse{Detail: detail}, nil
}

// Retire revokes the old key by its ID (Dual); a key already gone (404, 410)
// counts as revoked. InPlace has nothing to retire: the old password stopped
// working at Apply.
func (r *Rotator) Retire(ctx context.Context, req rotator.RetireRequest) (rotator.RetireResponse, error) {
	s, err := specOf(req.Current)
	if err != nil {
		return rotator.RetireResponse{}, err
	}
	if s.mode() == rotator.InPlace {
		return rotator.RetireResponse{}, nil
	}
	old := req.Old.String(FieldKeyID)
	switch {
	case old == "":
		return rotator.RetireResponse{}, rotator.Errorf(rotator.ClassConfig, "revoke key",
			"version %d has no key_id, so its key cannot be revoked automatically: revoke it at the provider by hand", req.Old.Version)
	case old == req.Current.String(FieldKeyID) || req.Old.Secret[SecretKey].Equal(req.Current.Secret[SecretKey]):
		return rotator.RetireResponse{}, rotator.Errorf(rotator.ClassConfig, "revoke key",
			"versions %d and %d share key %s: refusing to revoke the key being served", req.Old.Version, req.Current.Version, old)
	}
	a, err := r.auth(ctx, s, req.Resolver, req.Current)
	if err != nil {
		return rotator.RetireResponse{}, err
	}
	secrets := []string{req.Old.Secret[SecretKey].Reveal(), req.Current.Secret[SecretKey].Reveal(), a.key}
	return rotator.RetireResponse{}, r.revoke(ctx, s, req.Old, old, a, secrets)
}

// revoke deletes key id; 404 and 410 count as success.
func (r *Rotator) revoke(ctx context.Context, s *Spec, subject rotator.Credential, id string, a authKey, secrets []string) error {
	resp, err := r.do(ctx, call{
		op:      "revoke key",
		req:     s.Revoke,
		vars:    callVars(subject, "", id, a, 0),
		secrets: secrets,
	})
	if err != nil && resp != nil && (resp.status == http.StatusNotFound || resp.status == http.StatusGone) {
		return nil
	}
	return err
}

// Revert revokes the pending key (Dual), or sets the current password back
// (InPlace) unless it already works. Both are idempotent.
func (r *Rotator) Revert(ctx context.Context, req rotator.RevertRequest) (rotator.RevertResponse, error) {
	s, err := specOf(req.Current)
	if err != nil {
		return rotator.RevertResponse{}, err
	}
	if s.mode() == rotator.InPlace {
		if ok, err := r.works(ctx, s, req.Current); err != nil || ok {
			return rotator.RevertResponse{}, err
		}
		return rotator.RevertResponse{}, r.set(ctx, s, req.Current, req.Pending, req.Resolver)
	}
	id := req.Pending.String(FieldKeyID)
	if req.Pending.Secret[SecretKey].IsZero() || req.Pending.Secret[SecretKey].Equal(req.Current.Secret[SecretKey]) {
		return rotator.RevertResponse{}, nil // nothing was minted
	}
	switch {
	case id == "":
		return rotator.RevertResponse{}, rotator.Errorf(rotator.ClassConfig, "revoke key",
			"pending version %d has no key_id: revoke its key at the provider by hand", req.Pending.Version)
	case id == req.Current.String(FieldKeyID):
		return rotator.RevertResponse{}, rotator.Errorf(rotator.ClassConfig, "revoke key",
			"pending version %d carries the current key_id %s: refusing to revoke the key being served", req.Pending.Version, id)
	}
	a, err := r.auth(ctx, s, req.Resolver, req.Current)
	if err != nil {
		return rotator.RevertResponse{}, err
	}
	secrets := []string{req.Pending.Secret[SecretKey].Reveal(), req.Current.Secret[SecretKey].Reveal(), a.key}
	return rotator.RevertResponse{}, r.revoke(ctx, s, req.Pending, id, a, secrets)
}

// Cleanup lists the account's keys and revokes every key that carries this
// credential's marker (Spec.List) and is not one of req.Keep. Keys without the
// marker, made by people or other tools, are never touched. It refuses to run
// when a kept version has no key_id, since that key could not be told apart
// from an orphan. InPlace specs have no orphans.
func (r *Rotator) Cleanup(ctx context.Context, req rotator.CleanupRequest) (rotator.CleanupResponse, error) {
	first := req.Current
	if first.Fields == nil && len(req.Keep) > 0 {
		first = req.Keep[0]
	}
	if first.Fields == nil {
		return rotator.CleanupResponse{}, rotator.Errorf(rotator.ClassConfig, "cleanup", "no current version was given; it carries the spec")
	}
	s, err := specOf(first)
	if err != nil {
		return rotator.CleanupResponse{}, err
	}
	if s.mode() == rotator.InPlace {
		return rotator.CleanupResponse{}, nil
	}
	if s.List == nil {
		return rotator.CleanupResponse{}, rotator.Errorf(rotator.ClassConfig, "cleanup",
			"the spec has no list call, so orphaned keys cannot be found: add list, or revoke keys named by the rotation's journal by hand")
	}
	keep := map[string]bool{}
	var secrets []string
	for _, k := range req.Keep {
		id := k.String(FieldKeyID)
		if id == "" {
			return rotator.CleanupResponse{}, rotator.Errorf(rotator.ClassConfig, "cleanup",
				"version %d has no key_id, so its key cannot be told apart from an orphan: refusing to revoke anything", k.Version)
		}
		keep[id] = true
		secrets = append(secrets, secretsOf(k.Secret)...)
	}
	a, err := r.auth(ctx, s, req.Resolver, first)
	if err != nil {
		return rotator.CleanupResponse{}, err
	}
	secrets = append(secrets, a.key)
	v := callVars(first, first.Secret[SecretKey].Reveal(), first.String(FieldKeyID), a, 0)
	prefix, err := render(s.List.MarkerPrefix, v, rawEscape)
	if err != nil {
		return rotator.CleanupResponse{}, rotator.Wrap(rotator.ClassConfig, "cleanup", fmt.Errorf("list.marker_prefix: %w", err))
	}
	resp, err := r.do(ctx, call{op: "list keys", req: &s.List.Request, vars: v, secrets: secrets})
	if err != nil {
		return rotator.CleanupResponse{}, err
	}
	doc, err := decodeJSON(resp.body)
	if err != nil {
		return rotator.CleanupResponse{}, rotator.Errorf(rotator.ClassUnknown, "list keys", "the response is not JSON")
	}
	items, err := lookup(doc, s.List.ItemsPointer)
	arr, ok := items.([]any)
	if err != nil || !ok {
		return rotator.CleanupResponse{}, rotator.Errorf(rotator.ClassConfig, "list keys", "no array at list.items_pointer %q", s.List.ItemsPointer)
	}
	var out rotator.CleanupResponse
	var errs []error
	for _, it := range arr {
		id, err := lookupString(it, s.List.IDPointer)
		if err != nil || keep[id] {
			continue
		}
		marker, err := lookup(it, s.List.MarkerPointer)
		if m, ok := marker.(string); err != nil || !ok || !strings.HasPrefix(m, prefix) {
			continue
		}
		if err := r.revoke(ctx, s, first, id, a, secrets); err != nil {
			errs = append(errs, err)
			continue
		}
		out.Revoked++
	}
	if len(errs) > 0 {
		// Keep the first error's class (a 429 stays retryable).
		return out, &rotator.Error{Class: rotator.ClassOf(errs[0]), Op: "cleanup", RetryAfter: rotator.RetryAfter(errs[0]), Err: errors.Join(errs...)}
	}
	return out, nil
}
