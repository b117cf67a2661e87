package agent

import "golang.org/x/sys/unix"

const auditArch = unix.AUDIT_ARCH_AARCH64

const syscallNrLimit = 0

var archDeniedSyscalls = []uintptr{}
