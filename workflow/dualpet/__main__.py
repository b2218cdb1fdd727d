from dualpet.cli import main

raise SystemExit(main())
