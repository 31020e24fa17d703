// Package agent delivers credentials to applications that are not Go
// programs: it renders Go text/template files from credentials, writes them
// atomically, and runs an action (a signal, a command, a child restart) when
// they change. `nebula-credential agent --config FILE` and
// `nebula-credential run` are built on it; docs/agent.md is the reference.
//
// Reach for LoadConfig to read and check a YAML config (every error is a
// *ConfigError naming the file, line and field) and WriteFile for an atomic,
// change-only file write.
package agent
