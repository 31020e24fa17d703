package postgres

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/nebula-credential/nebula-credential/rotator"
	"github.com/nebula-credential/nebula-credential/secret"
)

// RFC 7677 §3: user "user", password "pencil". The server signature the RFC
// shows must follow from the ServerKey our verifier carries.
func TestSCRAMVerifierRFC7677(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	v, err := scramVerifierSalt("pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v, "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$") {
		t.Fatalf("verifier %q has the wrong prefix", v)
	}
	keys := strings.Split(strings.SplitN(v, "$", 3)[2], ":")
	storedKey, _ := base64.StdEncoding.DecodeString(keys[0])
	serverKey, _ := base64.StdEncoding.DecodeString(keys[1])
	const authMessage = "n=user,r=rOprNGfwEbeRWgbNEkqO," +
		"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096," +
		"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	sig := hmac.New(sha256.New, serverKey)
	sig.Write([]byte(authMessage))
	if got, want := base64.StdEncoding.EncodeToString(sig.Sum(nil)), "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="; got != want {
		t.Fatalf("server signature %s, want %s", got, want)
	}
	// ClientProof = ClientKey XOR ClientSignature, and H(ClientKey) = StoredKey.
	proof, _ := base64.StdEncoding.DecodeString("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
	cs := hmac.New(sha256.New, storedKey)
	cs.Write([]byte(authMessage))
	clientSig := cs.Sum(nil)
	clientKey := make([]byte, len(proof))
	for i := range proof {
		clientKey[i] = proof[i] ^ clientSig[i]
	}
	if h := sha256.Sum256(clientKey); !hmac.Equal(h[:], storedKey) {
		t.Fatal("StoredKey does not match the RFC's client proof")
	}
}

func TestSCRAMVerifierRandomSalt(t *testing.T) {
	a, _ := scramVerifier("same")
	b, _ := scramVerifier("same")
	if a == b {
		t.Fatal("two verifiers of one password share a salt")
	}
}

// Apply uses a verifier Prepare made only for exactly its password.
func TestVerifierForUsesOnlyAMatchingPreparation(t *testing.T) {
	r := New(Config{})
	pw := secret.New("pending-password-1")
	p := r.Prepare(rotator.Credential{Secret: secret.Map{"password": pw}})
	pv, ok := p.(*prepared)
	if !ok || !strings.HasPrefix(pv.verifier, "SCRAM-SHA-256$4096:") {
		t.Fatalf("Prepare returned %T", p)
	}
	if v, err := verifierFor(p, pw); err != nil || v != pv.verifier {
		t.Fatalf("matching preparation not used (err %v)", err)
	}
	for name, other := range map[string]any{"another password": r.Prepare(rotator.Credential{Secret: secret.Map{"password": secret.New("pending-password-2")}}), "nil": nil, "another type": "x"} {
		v, err := verifierFor(other, pw)
		if err != nil || v == pv.verifier || !strings.HasPrefix(v, "SCRAM-SHA-256$4096:") {
			t.Fatalf("%s: verifier reused or not computed (err %v)", name, err)
		}
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if out := fmt.Sprintf(verb, rotator.ApplyRequest{Prepared: p}); strings.Contains(out, "pending-password-1") || strings.Contains(out, pv.verifier) {
			t.Fatalf("%s of an ApplyRequest shows the prepared password or verifier: %s", verb, out)
		}
	}
	if r.Prepare(rotator.Credential{}) != nil {
		t.Fatal("Prepare without a password returned something")
	}
}
