package console

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"
	"time"
)

type templates struct {
	pages map[string]*template.Template
}

var pageNames = []string{"login", "error", "overview", "list", "credential", "confirm", "audit", "notifications", "notifycreated", "notifyremove"}

func parseTemplates() (*templates, error) {
	base, err := template.New("").Funcs(funcs).ParseFS(assets, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("console templates: %w", err)
	}
	t := &templates{pages: map[string]*template.Template{}}
	for _, name := range pageNames {
		b, err := base.Clone()
		if err != nil {
			return nil, err
		}
		if t.pages[name], err = b.ParseFS(assets, "templates/"+name+".html"); err != nil {
			return nil, fmt.Errorf("console templates: %w", err)
		}
	}
	return t, nil
}

// render executes a page into a buffer, then writes it: a template error
// never leaves half a page.
func (c *Console) render(w http.ResponseWriter, status int, name string, p page) {
	var buf bytes.Buffer
	if err := c.tmpl.pages[name].ExecuteTemplate(&buf, "layout", p); err != nil {
		c.cfg.Logger.Error("console: rendering page", "page", name, "err", err)
		http.Error(w, "internal error rendering the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

var funcs = template.FuncMap{
	"when": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			if v.IsZero() {
				return "-"
			}
			return v.UTC().Format("2006-01-02 15:04:05Z")
		case *time.Time:
			if v == nil || v.IsZero() {
				return "-"
			}
			return v.UTC().Format("2006-01-02 15:04:05Z")
		}
		return "-"
	},
	"iso": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			return v.UTC().Format(time.RFC3339)
		case *time.Time:
			if v != nil {
				return v.UTC().Format(time.RFC3339)
			}
		}
		return ""
	},
	// rel says how far t is from now, in words: "in 4m 10s", "3h ago".
	"rel": func(now time.Time, t any) string {
		var tt time.Time
		switch v := t.(type) {
		case time.Time:
			tt = v
		case *time.Time:
			if v == nil {
				return "-"
			}
			tt = *v
		}
		if tt.IsZero() {
			return "-"
		}
		d := tt.Sub(now)
		if d >= 0 {
			return "in " + short(d)
		}
		return short(-d) + " ago"
	},
	"dur": func(d time.Duration) string {
		if d <= 0 {
			return ""
		}
		return short(d)
	},
	"path": pathEscape,
}

// short formats a duration in at most two units.
func short(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm %ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh %dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd %dh", int(d.Hours())/24, int(d.Hours())%24)
	}
}
