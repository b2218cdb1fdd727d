from dualpet.allocator import keep_freed_memory
from dualpet.cli import main

keep_freed_memory()  # a step's process: freed arrays are reused, not faulted in again
raise SystemExit(main())
