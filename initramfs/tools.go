//go:build tools

// Package initramfs pins the u-root commands that go into the agent's
// initramfs, so that `go mod tidy` keeps them and their versions in go.mod.
package initramfs

import (
	_ "github.com/u-root/u-root"
	_ "github.com/u-root/u-root/cmds/core/init"
)
