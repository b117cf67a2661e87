package agent

import "golang.org/x/sys/unix"

const auditArch = unix.AUDIT_ARCH_X86_64

// syscallNrLimit denies the x32 ABI (numbers with bit 30 set).
const syscallNrLimit = 0x40000000

var archDeniedSyscalls = []uintptr{
	unix.SYS_IOPL, unix.SYS_IOPERM, unix.SYS_USELIB, unix.SYS__SYSCTL,
	unix.SYS_CREATE_MODULE, unix.SYS_GET_KERNEL_SYMS, unix.SYS_QUERY_MODULE,
}
