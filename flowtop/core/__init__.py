"""The core every run mode shares: flow model, flow table, engine loop, TCP health."""
