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

import pytest

from conftest import ROOT
from stand_ins import script, stand_ins

SLURM = ROOT / "node" / "slurm"
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


def test_containers_install_enroot_and_pyxis_with_folders_every_user_can_use(tmp_path: Path) -> None:
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
        "TMPFILES_DIR": str(tmp_path),
        "PYXIS_PLUGIN": str(tmp_path / "lib" / "spank_pyxis.so"),
    }

    def run(*args: str) -> list[str]:
        log = tmp_path / "calls.log"
        log.unlink(missing_ok=True)
        result = subprocess.run(
            ["/bin/bash", str(SLURM / "containers.sh"), *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return log.read_text().splitlines() if log.exists() else []

    # A login node: the plugin alone.
    login = run("--pyxis-only")
    assert any("pyxis/archive/refs/tags/v0.20.0.tar.gz" in c for c in login) and not any("enroot" in c for c in login)
    (tmp_path / "lib" / "spank_pyxis.so").unlink()
    first = run()
    assert any("enroot_3.5.0-1_amd64.deb" in c for c in first) and any(c.startswith("make -C") for c in first)
    for folder in ("enroot/data", "enroot/cache", "enroot/tmp"):
        assert stat.S_IMODE((scratch / folder).stat().st_mode) == 0o1777, folder
    assert stat.S_IMODE((tmp_path / "run-enroot").stat().st_mode) == 0o1777
    assert (tmp_path / "training-cluster-enroot.conf").read_text() == f"d {tmp_path}/run-enroot 1777 root root -\n"
    conf = (tmp_path / "enroot.conf.d" / "training-cluster.conf").read_text()
    assert f"ENROOT_DATA_PATH {scratch}/enroot/data/user-${{UID}}" in conf
    assert run() == []  # installed: nothing is fetched again
