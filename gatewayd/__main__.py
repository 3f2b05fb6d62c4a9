from gatewayd.cli.daemon import main

raise SystemExit(main())
