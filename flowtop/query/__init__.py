"""Questions asked of the flow table: the filter language and the live view's queries.

types       ViewQuery in, Snapshot (ViewRow, InterfaceRow) out: what a ViewSource speaks
filterexpr  the filter language, compiled to numpy masks over the key words
grouping    each flow's group identity and one aggregated row per group
ordering    sort and top-N, ties broken by row identity
entities    enrichment entities as arrays; the asn/country/label groups
owners      socket owners: owner columns, names as arrays; the process/service/container groups
names       names from the wire: name columns, the name table as arrays; the name group
rows        aggregated rows -> ViewRows (only those on screen)
tablequery  query_table: the steps above, over a FlowTable
source      TableSource: the ViewSource over an Engine, with interface rates and row history

Key members are read through layout.FLOW_KEY_WORDS, never by hand.
"""
