// Command nebula-credential is the CLI and server of nebula-credential.
//
// Every subcommand opens the store named by --store (or NEBULA_CREDENTIAL_STORE,
// default ./nebula-credential.db; a postgres:// URL selects PostgreSQL) with the
// key file named by --key-file (or NEBULA_CREDENTIAL_KEY_FILE, default beside
// the store) or the passphrase in NEBULA_CREDENTIAL_PASSPHRASE.
//
// Exit codes: 0 success, 1 operation failed, 2 usage error, 3 not found,
// 4 permission or key error.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:]))
}
