package main

import (
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// version is set at link time (-ldflags "-X main.version=v1.2.3"); without
// it the module version or VCS revision from the build info is used.
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := bi.Main.Version
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+dirty"
			}
		}
	}
	if (v == "" || v == "(devel)") && rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		return "devel " + rev + modified + " " + bi.GoVersion
	}
	if v == "" {
		v = "(devel)"
	}
	return v + " " + bi.GoVersion
}

// groupExamples are the examples of the commands that only group others.
var groupExamples = map[string]string{
	"audit": `  nebula-credential audit verify
  nebula-credential audit list --json`,
	"grace": `  nebula-credential grace extend prod/db/orders 2h`,
	"key": `  nebula-credential key rotate
  nebula-credential key list --json`,
	"policy": `  nebula-credential policy show prod/db/orders
  nebula-credential policy set prod/db/orders --periodic 30d`,
	"token": `  nebula-credential token create --name ci --grant read:prod/ --ttl 30d
  nebula-credential token list
  nebula-credential token revoke tok_3fa2b1c9d0e1`,
	"rotations": `  nebula-credential rotations prod/db/orders
  nebula-credential rotations resolve prod/db/orders --keep 3`,
	"completion": `  source <(nebula-credential completion bash)
  nebula-credential completion zsh > "${fpath[1]}/_nebula-credential"
  nebula-credential completion fish > ~/.config/fish/completions/nebula-credential.fish`,
}

// finishRoot adds --version, the completion command's example and the
// examples of group commands that have none of their own.
func finishRoot(root *cobra.Command) {
	root.Version = buildVersion()
	root.SetVersionTemplate("nebula-credential {{.Version}}\n")
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if ex, ok := groupExamples[c.Name()]; ok && c.Example == "" {
			c.Example = ex
		}
		if c.Name() == "put" {
			c.Long = strings.TrimRight(c.Long, "\n") + "\n\n" + fieldsHelp()
		}
		if c.Name() == "completion" {
			for _, sh := range c.Commands() {
				if sh.Example == "" {
					sh.Example = completionExamples[sh.Name()]
				}
			}
		}
	}
}

var completionExamples = map[string]string{
	"bash": `  source <(nebula-credential completion bash)
  nebula-credential completion bash > /etc/bash_completion.d/nebula-credential`,
	"zsh":        `  nebula-credential completion zsh > "${fpath[1]}/_nebula-credential"`,
	"fish":       `  nebula-credential completion fish > ~/.config/fish/completions/nebula-credential.fish`,
	"powershell": `  nebula-credential completion powershell | Out-String | Invoke-Expression`,
}
