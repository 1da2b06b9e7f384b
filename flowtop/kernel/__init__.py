"""Kernel side: build (bcc, in a child process), attach, drain and decode.

collector.KernelCollector is what the rest of flowtop uses; under it:

- build.py / compiler.py: bpf/*.c compiled and loaded by bcc in a short-lived
  child (compiler.py, the only module that imports bcc), the program and map
  fds handed back over a Unix socket (build.py). This process never maps
  the compiler.
- program.py: the TC programs and their maps (TcProgram); tcrequest.py: their
  build request (no numpy: the cli begins it first); tcpconn.py: the passive
  TCP connection map as samples.
- sockops.py: local TCP health (SockOpsTracker), with sockops_attach.py
  (cgroup attachment, stale programs), sockops_records.py (its records),
  cgroup.py (where cgroup v2 is), tracefs.py (tracepoints), btf.py.
- attach.py (clsact filters), tcx.py (TCX links), devices.py (which program
  pair a device gets), rtnl.py (links, their events, addresses and ingress
  qdiscs over rtnetlink, without pyroute2).
- maps.py (map reads and writes over fds), bpfsys.py (the bpf(2) syscall),
  layout.py (numpy mirrors of the C structs), counters.py (every counter).
"""
