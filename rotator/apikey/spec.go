package apikey

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

// Spec is the declarative description of an API-key service. It is decoded
// from a credential's non-secret fields with rotator.Credential.Decode; see the
// package example for a complete one.
//
// A spec with Create rotates with the Dual strategy (the provider mints a second
// key, the old one is revoked after grace). A spec with Set rotates in place: the
// rotator generates the new secret (PasswordPolicy) and sets it, for services
// with one password per user such as the RabbitMQ management API.
type Spec struct {
	// AuthCredential is the ID of another stored credential whose secret "key"
	// (or "password") and fields "key_id" and "username" authenticate the calls
	// (as {{auth_key}}, {{auth_key_id}}, {{auth_username}}). Empty: the current
	// key authenticates.
	AuthCredential string `json:"auth_credential,omitempty"`

	// Create mints a new key (Dual). Its response carries the key at KeyPointer
	// and its ID at KeyIDPointer. The rotator sends "Idempotency-Key: <rotation
	// id>", so a retried Stage gets the same key back from services that honour it.
	Create *Request `json:"create,omitempty"`
	// Set sets {{key}} as the new secret (InPlace).
	Set *Request `json:"set,omitempty"`
	// Verify proves that {{key}} works. Required.
	Verify *Request `json:"verify"`
	// Revoke deletes the key {{key_id}}. Required with Create. A 404 or 410
	// means the key is already gone, which counts as success.
	Revoke *Request `json:"revoke,omitempty"`
	// List finds keys this rotator created but the store never recorded (a crash
	// between the provider's response and the journal write), for Cleanup.
	List *List `json:"list,omitempty"`

	// PasswordPolicy shapes the secrets Set generates (default: 32 letters and digits).
	PasswordPolicy secret.PasswordPolicy `json:"password_policy,omitzero"`

	// KeyID is the ID of the credential's key at the provider (a non-secret field
	// written by Stage).
	KeyID string `json:"key_id,omitempty"`
}

// Request is one templated HTTP call.
type Request struct {
	Method  string            `json:"method,omitempty"` // default GET, or POST when Body is set
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers,omitempty"`
	// BasicAuth, when set, sends HTTP basic authentication.
	BasicAuth *BasicAuth `json:"basic_auth,omitempty"`
	Body      string     `json:"body,omitempty"`
	// ContentType of Body; default application/json. It also picks the escaping
	// of substituted values (JSON, form, or none).
	ContentType string `json:"content_type,omitempty"`
	// ExpectedStatus lists the statuses that mean success; default any 2xx.
	// A single number is accepted too.
	ExpectedStatus Statuses `json:"expected_status,omitempty"`

	// KeyPointer and KeyIDPointer are JSON pointers (RFC 6901) into Create's response.
	KeyPointer   string `json:"key_pointer,omitempty"`
	KeyIDPointer string `json:"key_id_pointer,omitempty"`
}

// BasicAuth holds templates for HTTP basic authentication.
type BasicAuth struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// List describes the call that lists the keys of the account.
type List struct {
	Request
	// ItemsPointer points at the array of keys in the response ("/data").
	ItemsPointer string `json:"items_pointer"`
	// IDPointer points at a key's ID inside one item ("/id").
	IDPointer string `json:"id_pointer"`
	// MarkerPointer points at a field of an item that Create set ("/name"), and
	// MarkerPrefix (a template) is what that field starts with for keys this
	// rotator created for this credential. Keys without the marker are never
	// touched.
	MarkerPointer string `json:"marker_pointer"`
	MarkerPrefix  string `json:"marker_prefix"`
}

// Statuses is a list of HTTP statuses that also decodes from a single number.
type Statuses []int

// UnmarshalJSON accepts 200 as well as [200, 201].
func (s *Statuses) UnmarshalJSON(b []byte) error {
	var one int
	if err := json.Unmarshal(b, &one); err == nil {
		*s = Statuses{one}
		return nil
	}
	var many []int
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("expected_status must be a number or a list of numbers")
	}
	*s = many
	return nil
}

func (s Statuses) ok(code int) bool {
	if len(s) == 0 {
		return code >= 200 && code < 300
	}
	for _, c := range s {
		if c == code {
			return true
		}
	}
	return false
}

func (r *Request) method() string {
	switch {
	case r.Method != "":
		return strings.ToUpper(r.Method)
	case r.Body != "":
		return http.MethodPost
	default:
		return http.MethodGet
	}
}

func (r *Request) contentType() string {
	if r.ContentType != "" {
		return r.ContentType
	}
	return "application/json"
}

func (r *Request) check(name string) error {
	if r.URL == "" {
		return fmt.Errorf("%s.url is required", name)
	}
	tmpls := []string{r.URL, r.Body}
	for k, v := range r.Headers {
		if strings.ContainsAny(k+v, "\r\n") {
			return fmt.Errorf("%s.headers: header %q contains a line break", name, k)
		}
		tmpls = append(tmpls, v)
	}
	if r.BasicAuth != nil {
		tmpls = append(tmpls, r.BasicAuth.Username, r.BasicAuth.Password)
	}
	for _, t := range tmpls {
		if err := checkTemplate(t); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// mode is how a spec rotates.
func (s *Spec) mode() rotator.Strategy {
	if s.Set != nil {
		return rotator.InPlace
	}
	return rotator.Dual
}

// Validate reports a spec that cannot work, as a ClassConfig error.
func (s *Spec) Validate() error {
	err := s.validate()
	if err != nil {
		return &rotator.Error{Class: rotator.ClassConfig, Op: "validate spec", Err: err}
	}
	return nil
}

func (s *Spec) validate() error {
	switch {
	case s.Create == nil && s.Set == nil:
		return errors.New("one of create (a provider-minted key) or set (an in-place password) is required")
	case s.Create != nil && s.Set != nil:
		return errors.New("create and set are exclusive")
	case s.Verify == nil:
		return errors.New("verify is required")
	}
	if err := s.Verify.check("verify"); err != nil {
		return err
	}
	if s.Create != nil {
		if err := s.Create.check("create"); err != nil {
			return err
		}
		if s.Create.KeyPointer == "" || !validPointer(s.Create.KeyPointer) {
			return errors.New("create.key_pointer must be a JSON pointer such as /secret")
		}
		if s.Create.KeyIDPointer == "" || !validPointer(s.Create.KeyIDPointer) {
			return errors.New("create.key_id_pointer must be a JSON pointer such as /id")
		}
		if s.Revoke == nil {
			return errors.New("revoke is required with create: the old key must be revoked after grace")
		}
	}
	if s.Set != nil {
		if err := s.Set.check("set"); err != nil {
			return err
		}
		if err := s.PasswordPolicy.Validate(); err != nil {
			return fmt.Errorf("password_policy: %w", err)
		}
	}
	if s.Revoke != nil {
		if err := s.Revoke.check("revoke"); err != nil {
			return err
		}
	}
	if s.List != nil {
		if err := s.List.check("list"); err != nil {
			return err
		}
		if err := checkTemplate(s.List.MarkerPrefix); err != nil {
			return fmt.Errorf("list.marker_prefix: %w", err)
		}
		for name, p := range map[string]string{"items_pointer": s.List.ItemsPointer, "id_pointer": s.List.IDPointer, "marker_pointer": s.List.MarkerPointer} {
			if !validPointer(p) || (name != "items_pointer" && p == "") {
				return fmt.Errorf("list.%s must be a JSON pointer", name)
			}
		}
		if s.List.MarkerPrefix == "" {
			return errors.New("list.marker_prefix is required: without it cleanup could revoke keys it did not create")
		}
	}
	return nil
}

// specOf decodes and validates the spec of c.
func specOf(c rotator.Credential) (*Spec, error) {
	var s Spec
	if err := c.Decode(&s); err != nil {
		return nil, err
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}
