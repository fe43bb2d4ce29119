"""What the node images already have, which a config must not take or hide: account names, and
folders a file system mount would cover.

The images: Ubuntu 22.04 and 24.04 and Amazon Linux 2023 (the Deep Learning Base AMIs built on
them: Docker, the NVIDIA and EFA software), and what the bootstrap installs (Slurm, munge, MariaDB,
the Session Manager agent).
"""

from __future__ import annotations

# ``useradd`` makes a group of the user's name, so a cluster user may take neither a user nor a group name.
_UBUNTU = (
    # users (/etc/passwd of Ubuntu 22.04 and 24.04 server cloud images)
    "root daemon bin sys sync games man lp mail news uucp proxy www-data backup list irc gnats nobody _apt "
    "messagebus syslog uuidd tcpdump sshd pollinate landscape fwupd-refresh usbmux tss dnsmasq polkitd "
    "dhcpcd _chrony ec2-instance-connect lxd ubuntu "
    # groups (/etc/group)
    "adm tty disk kmem dialout fax voice cdrom floppy tape sudo audio dip operator src shadow utmp video sasl "
    "plugdev staff users nogroup crontab netdev input sgx kvm render _ssh admin rdma"
)
_AMAZON_LINUX = (
    "shutdown halt operator ftp dbus chrony rpc rpcuser libstoragemgmt unbound ec2-user "
    "wheel mem lock utempter cgred screen stapusr stapsys stapdev ssh_keys input"
)
_DEEP_LEARNING_AMI = "docker nvidia-persistenced"
_CLUSTER_SOFTWARE = "slurm munge mysql ssm-user"

SYSTEM_NAMES = frozenset(" ".join((_UBUNTU, _AMAZON_LINUX, _DEEP_LEARNING_AMI, _CLUSTER_SOFTWARE)).split())
"""Users and groups that exist on some node image before the bootstrap adds cluster users."""
SYSTEM_NAME_PREFIXES = ("systemd-",)
"""Families of names systemd takes (systemd-network, systemd-resolve, systemd-journal, ...)."""


def is_system_name(name: str) -> bool:
    return name in SYSTEM_NAMES or name.startswith(SYSTEM_NAME_PREFIXES)


SYSTEM_TREES = (
    "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/lost+found", "/proc",
    "/root", "/run", "/sbin", "/snap", "/srv", "/sys", "/tmp", "/usr", "/var",
)  # fmt: skip
"""Folders of the operating system: a mount on or under one hides (or replaces) its files."""
PROTECTED_FOLDERS = (
    "/opt/training-cluster",  # the bootstrap, its stages and the node agents
    "/opt/dlami",  # the Deep Learning AMI's instance-store (NVMe) mounts
    "/opt/amazon",  # the EFA installer's libfabric and Open MPI
    "/opt/aws",  # the AWS agents (Neuron and others)
    "/opt/nvidia",  # NVIDIA tools on the Deep Learning AMI
)
"""Folders the nodes rely on outside :data:`SYSTEM_TREES`: a mount on, under or above one hides it."""


def mount_path_problem(path: str) -> str | None:
    """Why a file system cannot be mounted at ``path`` (a normalized absolute path), or ``None``."""
    if path == "/":
        return "'/' is the root of the operating system; use a folder of its own such as /fsx"
    for tree in SYSTEM_TREES:
        if path == tree or path.startswith(tree + "/"):
            return (
                f"{path!r} is {'' if path == tree else 'under '}the system folder {tree}: a mount there hides the "
                "operating system's files; use a folder of its own such as /fsx"
            )
    for folder in PROTECTED_FOLDERS:
        if path == folder or path.startswith(folder + "/") or folder.startswith(path + "/"):
            where = "is" if path == folder else "is under" if path.startswith(folder) else "holds"
            return f"{path!r} {where} {folder}, which the nodes need: a mount there hides it; use a folder such as /fsx"
    if path in ("/mnt", "/media"):
        return f"{path!r} is where the system mounts other disks; use a folder of its own such as /fsx or /mnt/fsx"
    return None
