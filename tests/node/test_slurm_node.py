"""node/slurm/slurm-node.sh, the Slurm bootstrap stage, run under bash for each role with
stand-ins for the package manager, AWS, systemd and the instance metadata service; and
slurmd-start.sh finding the controller."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import NODE
from stand_ins import script, stand_ins

SLURM = NODE / "slurm"
LAYOUT = {
    "cluster": "demo",
    "accounting": True,
    "groups": [{"name": "gpu", "gpus": 8, "memory_mib": 2097152}],
    "partitions": {"gpu": ["gpu"]},
}
MUNGE_KEY = "k" * 1024
STAND_INS = {
    # curl is only used for the instance metadata service here.
    "curl": 'case "$*" in *api/token*) echo token;; *local-ipv4*) echo 10.0.128.7;; *region*) echo us-east-1;; '
    "*) exit 22;; esac",
    "aws": f'echo "aws $*" >>"$FAKE_LOG"; case "$*" in *secret:database*) printf %s "$FAKE_DATABASE";; '
    f'*get-secret-value*) printf %s "{MUNGE_KEY}";; esac',
    "hostname": "echo ip-10-0-128-7",
    # The accounts useradd (a stand-in) would have made.
    "id": 'case "$*" in "-u slurm") echo 64030;; "-u alice") echo 2001;; "-u bob") echo 2002;; '
    '*) exec /usr/bin/id "$@";; esac',
    "getent": "exit 2",
    "iptables": 'echo "iptables $*" >>"$FAKE_LOG"',
    "sacctmgr": 'echo "sacctmgr $*" >>"$FAKE_LOG"',
    # install -d [-o U -g G] DIR...: the directories, without owners; install -m MODE SRC DST: a copy.
    "install": "args=(); mode=; dirs=; while (($#)); do case $1 in -d) dirs=1;; -o|-g) shift;; -m) shift; mode=$1;; "
    '*) args+=("$1");; esac; shift; done; if [[ -n $dirs ]]; then for d in "${args[@]}"; do '
    '[[ $d == /var/* || $d == /run/* ]] || mkdir -p "$d"; done; else cp "${args[0]}" "${args[1]}"; '
    '[[ -z $mode ]] || chmod "$mode" "${args[1]}"; fi',
}
LOGGED = ("apt-get", "apt-cache", "systemctl", "chown", "groupadd", "useradd", "mariadb", "mariadb-install-db",
          "scontrol", "bash")  # fmt: skip


@pytest.fixture
def node(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    for d in ("bin", "slurm", "hooks", "etc", "munge", "systemd", "mysql", "tmpfiles", "fsx"):
        (tmp_path / d).mkdir()
    for item in SLURM.iterdir():
        if item.is_file():
            shutil.copy(item, tmp_path / "slurm" / item.name)
    stand_ins(bin_dir, {**STAND_INS, **{name: f'echo "{name} $*" >>"$FAKE_LOG"' for name in LOGGED}})
    (tmp_path / "instance-id").write_text("i-0abc\n")
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "CLUSTER_NAME": "demo",
        "INSTANCE_GROUP": "gpu",
        "SLURM_LAYOUT": json.dumps(LAYOUT),
        "SLURM_CONTROLLER_PARAMETER": "/training-cluster/demo/slurm/controller-address",
        "SLURM_MUNGE_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:111122223333:secret:munge",
        "SLURM_ACCOUNTING": "true",
        "SLURM_USERS": "alice:2001 bob:2002",
        "SLURM_GPUS": "8",
        "FSX_MOUNT_PATH": str(tmp_path / "fsx"),
        "SLURM_DIR": str(tmp_path / "slurm"),
        "HOOK_DIR": str(tmp_path / "hooks"),
        "SLURM_ETC_DIR": str(tmp_path / "etc"),
        "MUNGE_KEY": str(tmp_path / "munge" / "munge.key"),
        "TRAINING_CLUSTER_SYSTEMD_DIR": str(tmp_path / "systemd"),
        "MYSQL_CONF_DIR": str(tmp_path / "mysql"),
        "TMPFILES_DIR": str(tmp_path / "tmpfiles"),
        "INSTANCE_ID_FILE": str(tmp_path / "instance-id"),
        "CONTROLLER_WAIT_SECONDS": "0",
    }


def run(env: dict[str, str], role: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/bash", str(SLURM / "slurm-node.sh")],
        env={**env, "SLURM_ROLE": role, **extra},
        capture_output=True,
        text=True,
        timeout=60,
    )


def calls(env: dict[str, str]) -> list[str]:
    return Path(env["FAKE_LOG"]).read_text().splitlines()


def test_the_controller_renders_slurm_publishes_its_address_and_starts(node: dict[str, str], tmp_path: Path) -> None:
    result = run(node, "controller", SLURM_CONTAINERS="true")
    assert result.returncode == 0, result.stdout + result.stderr
    fsx = tmp_path / "fsx"
    conf = (tmp_path / "etc" / "slurm.conf").read_text()
    assert "SlurmctldHost=ip-10-0-128-7(10.0.128.7)" in conf
    assert f"StateSaveLocation={fsx}/.slurm/demo/state" in conf and "AccountingStorageHost=10.0.128.7" in conf
    assert (fsx / ".slurm" / "demo" / "etc" / "slurm.conf").read_text() == conf  # for login nodes
    assert (tmp_path / "etc" / "plugstack.conf").read_text() == "optional /usr/local/lib/slurm/spank_pyxis.so\n"
    assert (
        fsx / ".slurm" / "demo" / "etc" / "plugstack.conf"
    ).read_text() == "optional /usr/local/lib/slurm/spank_pyxis.so\n"
    assert "StorageType=accounting_storage/mysql" in (tmp_path / "etc" / "slurmdbd.conf").read_text()
    assert f"datadir = {fsx}/.slurm/demo/mysql" in (tmp_path / "mysql" / "99-training-cluster.cnf").read_text()
    key = tmp_path / "munge" / "munge.key"
    assert key.read_text() == MUNGE_KEY and stat.S_IMODE(key.stat().st_mode) == 0o400
    log = calls(node)
    assert (
        "aws secretsmanager get-secret-value --secret-id arn:aws:secretsmanager:us-east-1:111122223333:secret:munge "
        "--query SecretString --output text" in log
    )
    assert (
        "aws ssm put-parameter --name /training-cluster/demo/slurm/controller-address --value 10.0.128.7 "
        "--type String --overwrite" in log
    )
    assert any(c.startswith("apt-get install") and "slurmctld" in c and "slurmdbd" in c for c in log)
    assert f"mariadb-install-db --user=mysql --datadir={fsx}/.slurm/demo/mysql" in log
    assert "sacctmgr --immediate add cluster demo" in log
    assert log.index("systemctl restart slurmdbd") < log.index("systemctl restart slurmctld")
    assert log[-1] == "scontrol reconfigure"  # nodes of a replaced controller get its new address
    dropin = (tmp_path / "systemd" / "slurmctld.service.d" / "training-cluster.conf").read_text()
    assert f"until mountpoint -q {fsx}" in dropin and "Restart=always" in dropin
    assert "OnUnitActiveSec=5min" in (tmp_path / "systemd" / "training-cluster-slurm-reap.timer").read_text()
    # Every 5 minutes the address is published again, should an update have reset the parameter.
    assert (
        f"ExecStartPre={tmp_path}/slurm/slurm-publish.sh 10.0.128.7"
        in (tmp_path / "systemd" / "training-cluster-slurm-reap.service").read_text()
    )
    reaper = (tmp_path / "systemd" / "training-cluster-slurm-reap.service").read_text()
    assert f"ExecStart={tmp_path}/slurm/slurm-reap.sh" in reaper
    assert "Environment=AWS_DEFAULT_REGION=us-east-1" in reaper  # the AWS CLI needs a region under systemd
    assert (
        "useradd --uid 2001 --gid 2001 --home-dir " + f"{fsx}/home/alice --no-create-home --shell /bin/bash alice"
        in log
    )
    assert (fsx / "home" / "alice").is_dir() and (fsx / "home" / "bob").is_dir()
    # Only root reaches the instance metadata service (the role can read the munge key).
    imds = (tmp_path / "systemd" / "training-cluster-imds.service").read_text()
    assert "iptables -C OUTPUT -d 169.254.169.254 -m owner ! --uid-owner 0 -j REJECT" in imds
    assert "Before=network-pre.target munge.service slurmd.service slurmctld.service" in imds
    assert log.index("systemctl start training-cluster-imds.service") < log.index("systemctl restart munge")


def test_users_may_be_let_use_the_node_role(node: dict[str, str], tmp_path: Path) -> None:
    result = run(node, "login", SLURM_USERS_USE_NODE_ROLE="true", CONTROLLER_WAIT_SECONDS="0")
    assert not (tmp_path / "systemd" / "training-cluster-imds.service").exists()
    assert "the controller has not written" in result.stdout  # the rest of the stage went on


def test_a_controller_with_rds_accounting_uses_the_database_secret(node: dict[str, str], tmp_path: Path) -> None:
    database = {"host": "db.abc.us-east-1.rds.amazonaws.com", "port": 3306, "username": "slurm", "password": "S3cr3t"}
    result = run(
        node,
        "controller",
        SLURM_DATABASE_SECRET_ARN="arn:aws:secretsmanager:us-east-1:111122223333:secret:database",
        FAKE_DATABASE=json.dumps(database),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    dbd = (tmp_path / "etc" / "slurmdbd.conf").read_text()
    assert (
        "StorageHost=db.abc.us-east-1.rds.amazonaws.com\nStoragePort=3306\nStorageUser=slurm\nStoragePass=S3cr3t" in dbd
    )
    assert stat.S_IMODE((tmp_path / "etc" / "slurmdbd.conf").stat().st_mode) == 0o600
    assert not (tmp_path / "slurm" / "database.json").exists()  # the password stays in slurmdbd.conf only
    log = calls(node)
    (install,) = [c for c in log if c.startswith("apt-get install")]
    assert "slurmdbd" in install and "mariadb-server" not in install
    assert (
        not any(c.startswith("mariadb") for c in log) and not (tmp_path / "mysql" / "99-training-cluster.cnf").exists()
    )
    assert log.index("systemctl restart slurmdbd") < log.index("systemctl restart slurmctld")


def test_a_compute_node_runs_slurmd_as_a_dynamic_node_of_its_group(node: dict[str, str], tmp_path: Path) -> None:
    result = run(node, "compute")
    assert result.returncode == 0, result.stdout + result.stderr
    dropin = (tmp_path / "systemd" / "slurmd.service.d" / "training-cluster.conf").read_text()
    assert "Environment=SLURMD_NODENAME=i-0abc AWS_DEFAULT_REGION=us-east-1" in dropin
    assert 'Environment="SLURMD_CONF=Feature=gpu Gres=gpu:8 RealMemory=1991270"' in dropin
    assert f"ExecStart=\nExecStart={tmp_path}/slurm/slurmd-start.sh" in dropin
    assert "ConditionPathExists=\n" in dropin  # configless: no local slurm.conf to wait for
    assert os.access(tmp_path / "hooks" / "slurm-health-check", os.X_OK)
    assert (tmp_path / "hooks" / "drain").read_text() == (SLURM / "slurm-agent-drain.sh").read_text()
    assert (tmp_path / "hooks" / "resume").read_text() == (SLURM / "slurm-agent-resume.sh").read_text()
    for hook in ("slurm-prolog", "slurm-epilog"):  # the job label on the node's metrics
        assert (tmp_path / "hooks" / hook).read_text() == (SLURM / f"{hook}.sh").read_text()
        assert os.access(tmp_path / "hooks" / hook, os.X_OK)
    log = calls(node)
    assert any(c.startswith("apt-get install") and " slurmd" in c for c in log)
    assert "systemctl restart slurmd" in log and not any("slurmctld" in c for c in log)
    assert not (tmp_path / "etc" / "slurm.conf").exists()


def test_a_login_node_reads_the_controllers_configuration(node: dict[str, str], tmp_path: Path) -> None:
    assert run(node, "login").returncode == 1  # the controller has not written it yet
    shared = tmp_path / "fsx" / ".slurm" / "demo" / "etc"
    shared.mkdir(parents=True)
    (shared / "slurm.conf").write_text("ClusterName=demo\n")
    result = run(node, "login")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "etc" / "slurm.conf").resolve() == shared / "slurm.conf"
    assert any(c.startswith("apt-get install") and c.endswith("munge slurm-client") for c in calls(node))
    assert not (tmp_path / "etc" / "plugstack.conf").exists()
    # With containers, srun here knows pyxis's options.
    assert run(node, "login", SLURM_CONTAINERS="true").returncode == 0
    assert f"bash {tmp_path}/slurm/containers.sh --pyxis-only" in calls(node)
    assert (tmp_path / "etc" / "plugstack.conf").resolve() == shared / "plugstack.conf"


def test_an_unknown_role_fails(node: dict[str, str]) -> None:
    result = run(node, "scheduler")
    assert result.returncode != 0 and "unknown SLURM_ROLE scheduler" in result.stdout


def test_slurmd_waits_for_the_controller_to_publish_its_address(tmp_path: Path) -> None:
    bin_dir = stand_ins(
        tmp_path / "bin",
        {
            # The parameter reads "pending" until the controller writes its address.
            "aws": f"n=$(cat {tmp_path}/n 2>/dev/null || echo 0); echo $((n + 1)) > {tmp_path}/n\n"
            "((n < 2)) && echo pending || echo 10.0.128.7",
            "sleep": "",
            "slurmd": 'printf "%s\\n" "$@"',
        },
    )
    result = subprocess.run(
        ["/bin/bash", str(SLURM / "slurmd-start.sh")],
        env={
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "SLURMD": str(bin_dir / "slurmd"),
            "SLURM_CONTROLLER_PARAMETER": "/training-cluster/demo/slurm/controller-address",
            "SLURMD_NODENAME": "i-0abc",
            "SLURMD_CONF": "Feature=gpu Gres=gpu:8",
        },
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "-D", "-s", "-Z", "-N", "i-0abc", "--conf-server", "10.0.128.7:6817", "--conf", "Feature=gpu Gres=gpu:8",
    ]  # fmt: skip
    assert result.stderr.count("waiting for the controller") == 2


@pytest.mark.parametrize(("current", "published"), [("pending", True), ("10.0.128.7", False)])
def test_the_controller_publishes_its_address_when_it_changed(tmp_path: Path, current: str, published: bool) -> None:
    script(
        tmp_path / "aws", f'echo "aws $*" >>{tmp_path}/calls.log\nif [[ $2 == get-parameter ]]; then echo {current}; fi'
    )
    result = subprocess.run(
        ["/bin/bash", str(SLURM / "slurm-publish.sh"), "10.0.128.7"],
        env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "SLURM_CONTROLLER_PARAMETER": "/p"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    puts = [c for c in (tmp_path / "calls.log").read_text().splitlines() if "put-parameter" in c]
    assert puts == (
        ["aws ssm put-parameter --name /p --value 10.0.128.7 --type String --overwrite"] if published else []
    )


ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="folders owned by other users: chown needs root")


@pytest.fixture
def containers(tmp_path: Path) -> dict[str, Any]:
    """containers.sh with stand-ins for the downloads, the package manager and make, in a temp root."""
    bin_dir = stand_ins(
        tmp_path / "bin",
        {
            "curl": 'echo "curl $*" >>"$FAKE_LOG"; out="${*: -2:1}"; '
            'if [[ $out == *.tar.gz ]]; then mkdir -p "$FAKE_SRC/pyxis-0.20.0"; tar -czf "$out" -C "$FAKE_SRC" .; '
            'else echo deb >"$out"; fi',
            "apt-get": 'echo "apt-get $*" >>"$FAKE_LOG"; [[ $* == *enroot.deb* ]] && touch "$FAKE_BIN/enroot" && '
            'chmod +x "$FAKE_BIN/enroot"; true',
            "dpkg": "echo amd64",
            "make": 'echo "make $*" >>"$FAKE_LOG"; mkdir -p "$(dirname "$PYXIS_PLUGIN")"; touch "$PYXIS_PLUGIN"',
        },
    )
    scratch = tmp_path / "nvme"
    scratch.mkdir()
    env = {
        "PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin",
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "FAKE_BIN": str(bin_dir),
        "FAKE_SRC": str(tmp_path / "src"),
        "ENROOT_SCRATCH": str(scratch),
        "ENROOT_CONF_DIR": str(tmp_path / "enroot.conf.d"),
        "ENROOT_RUN_DIR": str(tmp_path / "run-enroot"),
        "ENROOT_FOLDERS_LOG": str(tmp_path / "enroot-folders.log"),
        "TMPFILES_DIR": str(tmp_path),
        "PYXIS_PLUGIN": str(tmp_path / "lib" / "spank_pyxis.so"),
        "SLURM_USERS": "alice:2001 bob:2002",
    }
    parents = [scratch / "enroot" / p for p in ("data", "cache", "tmp")] + [tmp_path / "run-enroot"]
    return {
        "env": env,
        "scratch": scratch,
        "parents": parents,
        "conf": tmp_path / "enroot.conf.d" / "training-cluster.conf",
    }


def run_containers(containers: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    log = Path(containers["env"]["FAKE_LOG"])
    log.unlink(missing_ok=True)
    return subprocess.run(
        ["/bin/bash", str(SLURM / "containers.sh"), *args],
        env=containers["env"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def installed(containers: dict[str, Any], *args: str) -> list[str]:
    result = run_containers(containers, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    log = Path(containers["env"]["FAKE_LOG"])
    return log.read_text().splitlines() if log.exists() else []


def owner_and_mode(path: Path) -> tuple[int, int]:
    info = path.lstat()
    return info.st_uid, stat.S_IMODE(info.st_mode)


@ROOT_ONLY
def test_containers_install_enroot_and_pyxis_with_a_folder_of_their_own_for_each_user(
    containers: dict[str, Any], tmp_path: Path
) -> None:
    """Issue 9: enroot's per-user folders are made for each user, owned by the user, mode 0700, in
    parents only root may write to (no longer 1777 folders where a user could make another's)."""
    # A login node: the plugin alone.
    login = installed(containers, "--pyxis-only")
    assert any("pyxis/archive/refs/tags/v0.20.0.tar.gz" in c for c in login) and not any("enroot" in c for c in login)
    (tmp_path / "lib" / "spank_pyxis.so").unlink()
    first = installed(containers)
    assert any("enroot_3.5.0-1_amd64.deb" in c for c in first) and any(c.startswith("make -C") for c in first)
    for parent in containers["parents"]:
        assert owner_and_mode(parent) == (0, 0o755), parent
        for uid in (2001, 2002):  # the cluster's users, before any job of theirs
            assert owner_and_mode(parent / str(uid)) == (uid, 0o700), parent / str(uid)
    assert owner_and_mode(containers["scratch"] / "enroot") == (0, 0o755)
    run_dir = tmp_path / "run-enroot"
    assert (tmp_path / "training-cluster-enroot.conf").read_text() == (
        f"d {run_dir} 0755 root root -\nd {run_dir}/2001 0700 2001 - -\nd {run_dir}/2002 0700 2002 - -\n"
    )  # /run at every boot
    conf = containers["conf"].read_text()
    scratch = containers["scratch"]
    assert conf == (
        f"ENROOT_RUNTIME_PATH {run_dir}/${{UID}}\nENROOT_DATA_PATH {scratch}/enroot/data/${{UID}}\n"
        f"ENROOT_CACHE_PATH {scratch}/enroot/cache/${{UID}}\nENROOT_TEMP_PATH {scratch}/enroot/tmp/${{UID}}\n"
    )
    assert "made" in (tmp_path / "enroot-folders.log").read_text()
    assert installed(containers) == []  # installed: nothing is fetched again
    for parent in containers["parents"]:
        assert owner_and_mode(parent / "2001") == (2001, 0o700)


@ROOT_ONLY
def test_containers_fix_the_folders_of_a_node_that_had_them_open(containers: dict[str, Any]) -> None:
    """A node set up before: its 1777 parents become root's 0755; the old user-<uid> folders stay."""
    old = containers["scratch"] / "enroot" / "data"
    (old / "user-2001").mkdir(parents=True)
    old.chmod(0o1777)
    installed(containers, "--pyxis-only")
    installed(containers)
    assert owner_and_mode(old) == (0, 0o755) and (old / "user-2001").is_dir()


@ROOT_ONLY
@pytest.mark.parametrize("planted", ["another user's folder", "a symlink", "a file"])
def test_a_folder_planted_for_a_user_is_refused_and_the_boot_fails_loudly(
    containers: dict[str, Any], tmp_path: Path, planted: str
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    os.chown(victim, 2002, 2002)
    data = containers["scratch"] / "enroot" / "data"
    data.mkdir(parents=True)
    path = data / "2001"
    if planted == "a symlink":
        path.symlink_to(victim)
    elif planted == "a file":
        path.write_text("")
    else:
        path.mkdir()
        os.chown(path, 2002, 2002)
    installed(containers, "--pyxis-only")
    result = run_containers(containers)
    assert result.returncode == 1
    assert f"refusing {path}: not a directory of uid 2001's own" in result.stderr
    assert f"refusing {path}" in (tmp_path / "enroot-folders.log").read_text()
    assert owner_and_mode(victim) == (2002, 0o700)  # nothing followed the link
    assert path.is_symlink() == (planted == "a symlink")
    assert owner_and_mode(data / "2002") == (2002, 0o700)  # the other users still get theirs


def folders(tmp_path: Path, *uids: str, **env: str) -> subprocess.CompletedProcess[str]:
    """enroot-folders.sh with a configuration naming two parents in ``tmp_path``."""
    conf = tmp_path / "training-cluster.conf"
    if not conf.exists():
        conf.write_text(f"ENROOT_RUNTIME_PATH {tmp_path}/run/${{UID}}\nENROOT_DATA_PATH {tmp_path}/data/${{UID}}\n")
    return subprocess.run(
        ["/bin/bash", str(SLURM / "enroot-folders.sh"), *uids],
        env={**os.environ, "ENROOT_CONF": str(conf), "ENROOT_FOLDERS_LOG": str(tmp_path / "folders.log"), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@ROOT_ONLY
def test_enroot_folders_for_a_new_user_and_again(tmp_path: Path) -> None:
    result = folders(tmp_path, "3001")
    assert result.returncode == 0, result.stderr
    for parent in ("run", "data"):
        assert owner_and_mode(tmp_path / parent) == (0, 0o755)
        assert owner_and_mode(tmp_path / parent / "3001") == (3001, 0o700)
    (tmp_path / "data" / "3001").chmod(0o755)  # the user opened it: it is closed again
    assert folders(tmp_path, "3001").returncode == 0
    assert owner_and_mode(tmp_path / "data" / "3001") == (3001, 0o700)


@ROOT_ONLY
def test_enroot_folders_refuse_an_open_parent_and_a_uid_that_is_not_one(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir(mode=0o777)
    (tmp_path / "data").chmod(0o1777)
    result = folders(tmp_path, "3001", "x;rm")
    assert result.returncode == 1
    assert f"refusing {tmp_path}/data: not a directory of root's that only root may write to" in result.stderr
    assert "refusing uid 'x;rm': not a number" in result.stderr
    assert not (tmp_path / "data" / "3001").exists()
    assert owner_and_mode(tmp_path / "run" / "3001") == (3001, 0o700)


def test_enroot_folders_do_nothing_without_enroot(tmp_path: Path) -> None:
    result = folders(tmp_path, "3001", ENROOT_CONF=str(tmp_path / "missing.conf"))
    assert result.returncode == 0 and not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


@ROOT_ONLY
def test_the_prolog_makes_the_jobs_users_folders_and_never_fails(tmp_path: Path) -> None:
    """Issue 9: a job's user who is not one of the config's gets folders before the job needs them."""
    conf = tmp_path / "training-cluster.conf"
    conf.write_text(f"ENROOT_DATA_PATH {tmp_path}/data/${{UID}}\n")
    hook = script(
        tmp_path / "enroot-folders",
        f'ENROOT_CONF={conf} ENROOT_FOLDERS_LOG={tmp_path}/folders.log exec /bin/bash {SLURM}/enroot-folders.sh "$@"',
    )

    def prolog(uid: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/bash", str(SLURM / "slurm-prolog.sh")],
            env={
                **os.environ,
                "ENROOT_FOLDERS": str(hook),
                "SLURM_JOB_UID": uid,
                "SLURM_JOB_ID": "7",
                "TEXTFILE_DIR": str(tmp_path / "textfile"),
            },
            capture_output=True,
            text=True,
            timeout=30,
        )

    assert prolog("3001").returncode == 0
    assert owner_and_mode(tmp_path / "data" / "3001") == (3001, 0o700)
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o755)
    (tmp_path / "data" / "3002").symlink_to(target)
    result = prolog("3002")
    assert result.returncode == 0  # a failing prolog would drain the node
    assert f"refusing {tmp_path}/data/3002" in (tmp_path / "folders.log").read_text()
    assert owner_and_mode(target) == (0, 0o755) and (tmp_path / "data" / "3002").is_symlink()


def test_a_compute_node_with_containers_installs_the_folders_hook(node: dict[str, str], tmp_path: Path) -> None:
    result = run(node, "compute", SLURM_CONTAINERS="true")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"bash {tmp_path}/slurm/containers.sh" in calls(node)
    hook = tmp_path / "hooks" / "enroot-folders"
    assert hook.read_text() == (SLURM / "enroot-folders.sh").read_text() and os.access(hook, os.X_OK)
