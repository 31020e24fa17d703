package rotator

import (
	"reflect"
	"strings"
)

// FieldNames lists the JSON names of the non-secret fields a rotator reads,
// from its fields struct (v is a value of it): the fields of embedded structs
// are included as encoding/json flattens them. The CLI's `put --help` and
// `template` are generated from it, so they never drift from the code.
func FieldNames(v any) []string {
	var out []string
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			name, _, _ := strings.Cut(tag, ",")
			if f.Anonymous && name == "" {
				walk(f.Type)
				continue
			}
			if !f.IsExported() || name == "-" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			out = append(out, name)
		}
	}
	walk(reflect.TypeOf(v))
	return out
}
