# sysbox.sh - sourced by test_deb.sh: a real systemd for the package to install
# into. Where systemd is PID 1, that is the host itself. Elsewhere (as root, with
# systemd-nspawn), a booted container of this very system: an overlay whose lower
# layer is the host's / and whose upper layer is a tmpfs (every write, dpkg's
# included, lands there and vanishes with it), in a mount namespace of its own,
# with a private network (only its own loopback), booted to basic.target so that
# no host service starts; systemd is its PID 1.
#   sysbox_start TMPDIR BIND_DIR   -> $sysbox_why on failure; BIND_DIR is at /mnt/ms-deb
#   sysbox_run CMD...              runs CMD under that systemd (host or container)
#   sysbox_stop                    halts the container, waits for it
sysbox_pid=
sysbox_leader=
sysbox_why=

sysbox_start() {
	if [ "$(id -u)" -ne 0 ]; then
		sysbox_why="installing and starting the package needs root"
		return 1
	fi
	if [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ]; then
		sysbox_bind=$2
		return 0
	fi
	if ! command -v systemd-nspawn >/dev/null 2>&1; then
		sysbox_why="systemd is not PID 1 and systemd-nspawn is missing (scripts/deps.sh installs systemd-container)"
		return 1
	fi
	sysbox_bind=/mnt/ms-deb
	d=$1/box
	mkdir -p "$d"
	unshare --mount --propagation private sh -c '
		d=$1
		mount -t tmpfs -o mode=0755 ms-box "$d" || exit 1
		mkdir "$d/upper" "$d/work" "$d/root"
		mount -t overlay ms-box -o "lowerdir=/,upperdir=$d/upper,workdir=$d/work" "$d/root" ||
			exit 1
		exec systemd-nspawn --quiet --directory="$d/root" --register=no --keep-unit \
			--private-network --console=passive --bind-ro="$2:/mnt/ms-deb" \
			--boot -- systemd.unit=basic.target' sh "$d" "$2" >"$1/nspawn.log" 2>&1 &
	sysbox_pid=$!
	# the container's systemd is nspawn's child (unshare and sh exec'd into nspawn)
	i=0
	while [ -z "$sysbox_leader" ] && [ $i -lt 600 ]; do
		kill -0 "$sysbox_pid" 2>/dev/null || break
		sysbox_leader=$(ps -o pid= --ppid "$sysbox_pid" 2>/dev/null | head -1 | tr -d ' ')
		[ -n "$sysbox_leader" ] && [ "$(ps -p "$sysbox_leader" -o comm= 2>/dev/null)" = systemd ] ||
			sysbox_leader=
		[ -n "$sysbox_leader" ] || sleep 0.1
		i=$((i + 1))
	done
	if [ -z "$sysbox_leader" ]; then
		sysbox_why="systemd-nspawn did not boot a container: $(tail -3 "$1/nspawn.log" | tr '\n' ' ')"
		sysbox_stop
		return 1
	fi
	# booted: is-system-running --wait returns once start-up is over (running or degraded)
	i=0
	while [ $i -lt 600 ]; do
		state=$(sysbox_run systemctl is-system-running --wait 2>/dev/null)
		case $state in running | degraded) return 0 ;; esac
		kill -0 "$sysbox_pid" 2>/dev/null || break
		sleep 0.1
		i=$((i + 1))
	done
	sysbox_why="the container's systemd never finished booting (state '$state'): $(tail -3 "$1/nspawn.log" | tr '\n' ' ')"
	sysbox_stop
	return 1
}

sysbox_run() {
	if [ -z "$sysbox_leader" ]; then
		"$@"
	else
		nsenter --target "$sysbox_leader" --mount --uts --ipc --net --pid --cgroup -- "$@"
	fi
}

sysbox_stop() {
	[ -n "$sysbox_pid" ] || return 0
	# nspawn turns SIGTERM into an orderly halt of the container's systemd
	kill -TERM "$sysbox_pid" 2>/dev/null
	i=0
	while kill -0 "$sysbox_pid" 2>/dev/null && [ $i -lt 600 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	kill -KILL "$sysbox_pid" 2>/dev/null
	wait "$sysbox_pid" 2>/dev/null
	sysbox_pid=
	sysbox_leader=
}
