from dockship.cli import main

raise SystemExit(main())
