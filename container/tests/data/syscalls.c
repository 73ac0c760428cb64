/* Tries system calls a container should not make (seccomp escape classes, issue 11) and prints
 * "name errno" for each (0: it succeeded). Built static by tests/seccomp.rs; raw syscall(2)
 * only, so that no libc wrapper hides or emulates a call. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static void report(const char *name, long ret) {
    printf("%s %d\n", name, ret < 0 ? errno : 0);
}

int main(void) {
    char buf[256];
    memset(buf, 0, sizeof buf);
    /* KEYCTL_GET_KEYRING_ID of KEY_SPEC_SESSION_KEYRING, creating it. */
    report("keyctl", syscall(SYS_keyctl, 0, -3, 1));
    report("add_key", syscall(SYS_add_key, "user", "molde", "x", 1, -3));
    /* BPF_PROG_LOAD with an empty attribute. */
    report("bpf", syscall(SYS_bpf, 5, buf, 64));
    /* A software clock counter of this process. */
    unsigned int *attr = (unsigned int *)buf;
    attr[0] = 1;   /* PERF_TYPE_SOFTWARE */
    attr[1] = 128; /* size */
    report("perf_event_open", syscall(SYS_perf_event_open, buf, 0, -1, -1, 0));
    /* UFFD_USER_MODE_ONLY (1), which needs no privilege where the sysctl allows. */
    report("userfaultfd", syscall(SYS_userfaultfd, 1));
    report("kexec_load", syscall(SYS_kexec_load, 0, 0, NULL, 0));
    memset(buf, 0, sizeof buf);
    buf[0] = 8; /* handle_bytes */
    report("open_by_handle_at", syscall(SYS_open_by_handle_at, AT_FDCWD, buf, O_RDONLY));
    report("mount", syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, NULL));
    report("unshare_user", syscall(SYS_unshare, CLONE_NEWUSER));
    long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0)
        syscall(SYS_exit_group, 0);
    report("clone_newuser", pid);
    memset(buf, 0, sizeof buf);
    /* clone3 with only an exit signal: its flags are out of a filter's reach. */
    ((unsigned long long *)buf)[4] = SIGCHLD;
    pid = syscall(SYS_clone3, buf, 88);
    if (pid == 0)
        syscall(SYS_exit_group, 0);
    report("clone3", pid);
    report("personality_bad", syscall(SYS_personality, 0x0400000)); /* READ_IMPLIES_EXEC */
    report("personality_query", syscall(SYS_personality, 0xffffffffUL));
    report("socket_vsock", syscall(SYS_socket, 40, SOCK_STREAM, 0));
    report("socket_unix", syscall(SYS_socket, AF_UNIX, SOCK_STREAM, 0));
    report("getpid", syscall(SYS_getpid));
    /* fork through clone without namespace flags: allowed. */
    pid = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (pid == 0)
        syscall(SYS_exit_group, 0);
    report("clone_plain", pid);
    return 0;
}
