"""Flow exporters fed by the engine's flow-end batches (IPFIX in ipfix/)."""
