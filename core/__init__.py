"""What every other part shares: the record types, the settings, the request context, the message
text rules, the one exception hierarchy, and the store (the only SQL) with its migrations. It
imports nothing else of shadoweval."""
