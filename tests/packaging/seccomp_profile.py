#!/usr/bin/python3
"""The seccomp profile of ambit-node-proxy (configs/k8s/seccomp/), made from
the same system-call set the systemd unit allows, and a way to run a
program under such a profile without a container runtime.

    seccomp_profile.py generate              print the profile (JSON)
    seccomp_profile.py exec PROFILE -- CMD   run CMD under PROFILE

The profile is what container runtimes read for
`seccompProfile: {type: Localhost}` (the OCI/Docker JSON format):
systemd's @system-service set (io_uring, setns, ...), except that
  - setns is allowed only for network namespaces (as RestrictNamespaces=net),
  - clone is allowed only without namespace flags, unshare not at all,
  - clone3 fails with ENOSYS (its flags sit in memory a filter cannot
    read), so glibc falls back to clone, which the filter can check,
and anything else fails with EPERM.  `exec` loads it with libseccomp
(Debian's python3-seccomp) into this process and execs CMD, so a test can
run the real node-proxy under exactly this filter.
"""
import json
import os
import shutil
import subprocess
import sys

CLONE_NEWNET = 0x40000000
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
CLONE_NS_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 \
    | CLONE_NEWNET
ENOSYS = 38
EPERM = 1


def system_service_syscalls():
    """systemd's @system-service, groups expanded (systemd-analyze)."""
    sa = shutil.which("systemd-analyze")
    if not sa:
        raise RuntimeError("systemd-analyze not installed")
    out = subprocess.run([sa, "syscall-filter"], capture_output=True, text=True, check=True).stdout
    groups, cur = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            cur = line.strip()
            groups[cur] = set()
        elif cur and line.strip() and not line.strip().startswith("#"):
            groups[cur].add(line.strip())

    def expand(g, seen):
        res = set()
        for x in groups.get(g, ()):
            if x.startswith("@"):
                if x not in seen:
                    res |= expand(x, seen | {x})
            else:
                res.add(x)
        return res
    return expand("@system-service", {"@system-service"})


def generate():
    special = {"setns", "clone", "clone3", "unshare"}
    names = sorted(system_service_syscalls() - special)
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
        "syscalls": [
            {"names": names, "action": "SCMP_ACT_ALLOW"},
            {"names": ["setns"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 1, "value": CLONE_NEWNET, "op": "SCMP_CMP_EQ"}]},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": CLONE_NS_FLAGS, "valueTwo": 0,
                       "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
        ],
    }


def load(profile):
    """A libseccomp filter for the native architecture from a profile."""
    import seccomp

    ops = {"SCMP_CMP_EQ": seccomp.EQ, "SCMP_CMP_NE": seccomp.NE,
           "SCMP_CMP_MASKED_EQ": seccomp.MASKED_EQ}
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(profile.get("defaultErrnoRet", EPERM)))
    for rule in profile["syscalls"]:
        if rule["action"] == "SCMP_ACT_ALLOW":
            action = seccomp.ALLOW
        elif rule["action"] == "SCMP_ACT_ERRNO":
            action = seccomp.ERRNO(rule.get("errnoRet", EPERM))
        else:
            raise ValueError(f"action {rule['action']} not supported")
        args = []
        for a in rule.get("args") or []:
            if a["op"] == "SCMP_CMP_MASKED_EQ":
                args.append(seccomp.Arg(a["index"], ops[a["op"]], a["value"], a.get("valueTwo", 0)))
            else:
                args.append(seccomp.Arg(a["index"], ops[a["op"]], a["value"]))
        for name in rule["names"]:
            if seccomp.resolve_syscall(seccomp.Arch.NATIVE, name) < 0:
                continue  # not a call of this architecture
            f.add_rule(action, name, *args)
    return f


def main(argv):
    if argv[:1] == ["generate"]:
        json.dump(generate(), sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    if len(argv) >= 4 and argv[0] == "exec" and argv[2] == "--":
        with open(argv[1]) as fh:
            f = load(json.load(fh))
        f.load()  # sets no_new_privs first (libseccomp's default)
        os.execvp(argv[3], argv[3:])
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
