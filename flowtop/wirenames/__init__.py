"""Names from the wire (issue 16): what a flow's server end was called by the
traffic itself.

dnsanswers   DNS responses -> (client, address, name, CNAME chain end, TTL)
tlshello     the server name (SNI) of a TLS ClientHello
httphost     the Host header of a plain HTTP request
firstdata    the first data segments of a connection, put in order (bounded)
names        WireNames: the names table and its vectorised join of flow keys
feed         WirePacket (kernel/wire_records.py) -> parse -> WireNames
reader       the thread that reads the kernel's WireCapture and feeds WireNames
"""
