package secret

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// Character classes used by PasswordPolicy.
const (
	Lower   = "abcdefghijklmnopqrstuvwxyz"
	Upper   = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	Digits  = "0123456789"
	Symbols = "-_.~!#%^*+=" // safe in URLs, DSNs and shell-free config files
)

// PasswordPolicy describes generated passwords. The zero value means the defaults:
// 32 characters from lower, upper and digits, at least one of each.
type PasswordPolicy struct {
	Length  int  `json:"length,omitempty"`
	Lower   *int `json:"min_lower,omitempty"`
	Upper   *int `json:"min_upper,omitempty"`
	Digits  *int `json:"min_digits,omitempty"`
	Symbols *int `json:"min_symbols,omitempty"` // 0 by default: symbols are not used unless asked
	// Alphabet, when set, replaces the classes above; the minimums are then ignored.
	Alphabet string `json:"alphabet,omitempty"`
}

func intOr(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}

// Validate reports a policy that cannot be satisfied.
func (p PasswordPolicy) Validate() error {
	n := p.length()
	if n < 12 || n > 1024 {
		return fmt.Errorf("password length %d out of range [12, 1024]", n)
	}
	if p.Alphabet != "" {
		for i := 0; i < len(p.Alphabet); i++ {
			if c := p.Alphabet[i]; c < 0x21 || c > 0x7e {
				return errors.New("password alphabet must be printable ASCII without spaces")
			}
		}
		if len(uniq(p.Alphabet)) < 10 {
			return errors.New("password alphabet needs at least 10 distinct characters")
		}
		return nil
	}
	sum := 0
	for _, c := range p.classes() {
		if c.min < 0 {
			return errors.New("password class minimum must not be negative")
		}
		sum += c.min
	}
	if sum > n {
		return fmt.Errorf("password class minimums (%d) exceed length %d", sum, n)
	}
	return nil
}

func (p PasswordPolicy) length() int {
	if p.Length == 0 {
		return 32
	}
	return p.Length
}

type class struct {
	chars string
	min   int
}

func (p PasswordPolicy) classes() []class {
	cs := []class{
		{Lower, intOr(p.Lower, 1)},
		{Upper, intOr(p.Upper, 1)},
		{Digits, intOr(p.Digits, 1)},
	}
	if s := intOr(p.Symbols, 0); s > 0 {
		cs = append(cs, class{Symbols, s})
	}
	return cs
}

func uniq(s string) string {
	seen := map[rune]bool{}
	var b strings.Builder
	for _, r := range s {
		if !seen[r] {
			seen[r] = true
			b.WriteRune(r)
		}
	}
	return b.String()
}

// Generate returns a new random password satisfying p, from crypto/rand.
func (p PasswordPolicy) Generate() (Value, error) {
	if err := p.Validate(); err != nil {
		return Value{}, err
	}
	n := p.length()
	out := make([]byte, 0, n)
	var all string
	if p.Alphabet != "" {
		all = uniq(p.Alphabet)
	} else {
		for _, c := range p.classes() {
			all += c.chars
			for range c.min {
				out = append(out, pick(c.chars))
			}
		}
	}
	for len(out) < n {
		out = append(out, pick(all))
	}
	// Fisher-Yates so the required characters are not all at the front.
	for i := len(out) - 1; i > 0; i-- {
		j := randInt(i + 1)
		out[i], out[j] = out[j], out[i]
	}
	return New(string(out)), nil
}

func pick(chars string) byte { return chars[randInt(len(chars))] }

func randInt(n int) int {
	v, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
	if err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return int(v.Int64())
}

// Token returns n random bytes encoded as unpadded base64url (for API tokens,
// signing keys and session secrets).
func Token(n int) Value {
	b := make([]byte, n)
	rand.Read(b)
	return New(base64.RawURLEncoding.EncodeToString(b))
}
