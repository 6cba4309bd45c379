from routecodex_trio.cli import main

raise SystemExit(main())
