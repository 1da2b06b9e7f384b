"""flowtop as a collector: IPFIX / NetFlow v9 / v5 / sFlow v5 received over the network.

urls        what `--listen` and `[listen]` take (ipfix://, netflow://)
elements    the Information Elements the decoders read (the exporter's table, plus
            the ones routers send)
templates   received (options) templates compiled to a numpy record layout
exporters   per-exporter state: templates, sequence numbers, sampling, counters
            (bounded, evicted least recently heard from)
ipfix       RFC 7011 message decoding
netflow     RFC 3954 (v9) and v5 message decoding
sflow       sFlow v5 datagrams: flow samples (a drain's batch) and counter samples
headers     sampled packet headers read to the flow key (numpy over a batch, or one)
ifcounters  sFlow interface counters as the fleet's interface rows
flows       decoded columns -> layout.FLOW_KEY / FLOW_STATS batches
ifmap       (exporter, domain, ifindex) -> a synthetic ifindex for the key
sockets     the UDP/TCP reader thread and its bounded queue
collector   ListenCollector: the engine's Collector over all of the above
"""
