package main

import (
	"os"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress returns a callback that drives a progress bar on stderr when stderr
// is a terminal (or NEBULA_CREDENTIAL_PROGRESS=1), and a function to finish it.
func (g *globals) progress(desc string) (func(done, total int), func()) {
	show := os.Getenv("NEBULA_CREDENTIAL_PROGRESS") == "1"
	if f, ok := g.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		show = true
	}
	if !show || g.json {
		return func(int, int) {}, func() {}
	}
	var bar *progressbar.ProgressBar
	return func(done, total int) {
			if bar == nil {
				bar = progressbar.NewOptions(total,
					progressbar.OptionSetWriter(g.stderr),
					progressbar.OptionSetDescription(desc),
					progressbar.OptionShowCount(),
					progressbar.OptionSetWidth(30),
					progressbar.OptionClearOnFinish(),
				)
			}
			bar.ChangeMax(total)
			bar.Set(done)
		}, func() {
			if bar != nil {
				bar.Finish()
			}
		}
}
