"""Questions asked of the flow table: the filter language and the live view's queries."""
