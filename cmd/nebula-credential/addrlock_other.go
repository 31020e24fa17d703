//go:build !unix

package main

import "os"

func lockShared(*os.File) error { return nil }

func addrFileHeld(string) (held, known bool) { return false, false }

func processGone(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return true
	}
	p.Release()
	return false
}
