package server

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// queryReaders are the request methods that read a query parameter named by
// their first argument.
var queryReaders = []string{"query", "boolQuery", "intQuery"}

// typeName is the name of T or *T.
func typeName(e ast.Expr) string {
	if st, ok := e.(*ast.StarExpr); ok {
		e = st.X
	}
	if id, ok := e.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}

// queryParamsInSource maps each handler method of *Server (by name) to the
// query parameters it reads, directly or through the package's functions and
// methods it calls (resolved by receiver and parameter types, or by a method
// name only one type has).
func queryParamsInSource(t *testing.T) map[string][]string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var decls []*ast.FuncDecl
	byName := map[string][]string{} // method name -> "T.name" keys
	key := func(fd *ast.FuncDecl) string {
		if fd.Recv != nil && len(fd.Recv.List) == 1 {
			return typeName(fd.Recv.List[0].Type) + "." + fd.Name.Name
		}
		return "." + fd.Name.Name
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Body != nil {
				decls = append(decls, fd)
				byName[fd.Name.Name] = append(byName[fd.Name.Name], key(fd))
			}
		}
	}
	direct := map[string]map[string]bool{}
	calls := map[string]map[string]bool{}
	for _, fd := range decls {
		k := key(fd)
		direct[k], calls[k] = map[string]bool{}, map[string]bool{}
		vars := map[string]string{} // identifier -> its type name
		var fields []*ast.Field
		if fd.Recv != nil {
			fields = append(fields, fd.Recv.List...)
		}
		fields = append(fields, fd.Type.Params.List...)
		for _, f := range fields {
			for _, n := range f.Names {
				vars[n.Name] = typeName(f.Type)
			}
		}
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			var callee, method string
			switch fn := call.Fun.(type) {
			case *ast.SelectorExpr:
				method = fn.Sel.Name
				if id, ok := fn.X.(*ast.Ident); ok && vars[id.Name] != "" {
					callee = vars[id.Name] + "." + method
				} else if ks := byName[method]; len(ks) == 1 && !strings.HasPrefix(ks[0], ".") {
					callee = ks[0]
				}
			case *ast.Ident:
				method, callee = fn.Name, "."+fn.Name
			default:
				return true
			}
			if callee != "" && strings.HasPrefix(callee, "request.") && slices.Contains(queryReaders, method) {
				if len(call.Args) == 0 || strings.HasPrefix(k, "request.") && slices.Contains(queryReaders, fd.Name.Name) {
					// the readers themselves pass their name on
					return true
				}
				if lit, ok := call.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					v, _ := strconv.Unquote(lit.Value)
					direct[k][v] = true
				} else {
					t.Errorf("%s: %s(...) with a name that is not a literal: the OpenAPI check cannot see it", fset.Position(call.Pos()), method)
				}
				return true
			}
			if callee != "" {
				calls[k][callee] = true
			}
			return true
		})
	}
	out := map[string][]string{}
	for k := range direct {
		name, ok := strings.CutPrefix(k, "Server.")
		if !ok {
			continue
		}
		seen, params := map[string]bool{}, map[string]bool{}
		var walk func(string)
		walk = func(fn string) {
			if seen[fn] || direct[fn] == nil {
				return
			}
			seen[fn] = true
			for p := range direct[fn] {
				params[p] = true
			}
			for c := range calls[fn] {
				walk(c)
			}
		}
		walk(k)
		out[name] = []string{}
		for p := range params {
			out[name] = append(out[name], p)
		}
		slices.Sort(out[name])
	}
	return out
}

// TestOpenAPIQueryParameters: every query parameter a route's handler reads
// is documented on its operation in openapi.json, and every documented query
// parameter is read. (TestOpenAPIMatchesRoutes checks only methods and paths,
// which is how restore's skip_busy went undocumented.)
func TestOpenAPIQueryParameters(t *testing.T) {
	e := newEnv(t)
	read := queryParamsInSource(t)
	var doc struct {
		Paths map[string]map[string]struct {
			Parameters []struct {
				Name string `json:"name"`
				In   string `json:"in"`
				Ref  string `json:"$ref"`
			} `json:"parameters"`
		} `json:"paths"`
		Components struct {
			Parameters map[string]struct {
				Name string `json:"name"`
				In   string `json:"in"`
			} `json:"parameters"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openapiJSON, &doc); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, rt := range e.srv.routes {
		fn := runtime.FuncForPC(reflect.ValueOf(rt.handle).Pointer()).Name()
		fn = strings.TrimSuffix(fn[strings.LastIndex(fn, ".")+1:], "-fm")
		path := strings.ReplaceAll(rt.path, "{id...}", "{id}")
		op, ok := doc.Paths[path][strings.ToLower(rt.method)]
		if !ok {
			continue // TestOpenAPIMatchesRoutes reports it
		}
		var documented []string
		for _, p := range op.Parameters {
			if p.Ref != "" {
				c := doc.Components.Parameters[strings.TrimPrefix(p.Ref, "#/components/parameters/")]
				p.Name, p.In = c.Name, c.In
			}
			if p.In == "query" {
				documented = append(documented, p.Name)
			}
		}
		slices.Sort(documented)
		if _, known := read[fn]; !known {
			t.Errorf("%s: handler %s not found in the source", rt.pattern(), fn)
			continue
		}
		checked++
		for _, p := range read[fn] {
			if !slices.Contains(documented, p) {
				t.Errorf("%s %s: query parameter %q is read by %s but not in openapi.json", rt.method, path, p, fn)
			}
		}
		for _, p := range documented {
			if !slices.Contains(read[fn], p) {
				t.Errorf("%s %s: openapi.json documents query parameter %q, which %s never reads", rt.method, path, p, fn)
			}
		}
	}
	if checked < 30 {
		t.Fatalf("only %d routes checked: the handler lookup is broken", checked)
	}
}
