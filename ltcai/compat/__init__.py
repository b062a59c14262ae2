"""Pure, synchronous compatibility rules (SPEC.md §1–5): no I/O, no asyncio."""
