# Helpers the load-test scripts share; sourced (`. "$root/loadtest/lib.sh"`), never run.

# A TCP port on 127.0.0.1 free at the moment of asking.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits up to 10 s for something to listen on 127.0.0.1:$1.
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
# CPU ticks (utime + stime) of process $1 so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The machine's busy ticks so far (user, nice, system, irq, softirq, steal).
machine_ticks() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
# Field $2 (VmRSS, VmHWM...) of process $1's status, in kB.
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
# The machine's busy share (%) over 2 s before a run, nothing of ours busy yet: other work on
# the box would land in a machine CPU figure, so it is printed beside it.
background_busy() {
  local a b; a=$(awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat); sleep 2
  b=$(awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat)
  echo "$a $b" | awk '{d = ($3 - $1) + ($4 - $2); printf "%.0f", d ? ($3 - $1) * 100 / d : 0}'
}
