# Shared by the bench scripts (sourced, not run).

# free_ports N: N distinct free loopback TCP ports, picked at random below the kernel's ephemeral
# range (so that no outgoing connection of another process takes one meanwhile) and checked free
# by binding them; printed on one line.
free_ports() {
    python3 - "$1" <<'PY'
import random, socket, sys
want = int(sys.argv[1])
ports = []
while len(ports) < want:
    port = random.randrange(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        if port not in ports:
            ports.append(port)
    except OSError:
        pass
    finally:
        s.close()
print(" ".join(map(str, ports)))
PY
}
