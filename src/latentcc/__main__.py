from latentcc.app.cli import main

raise SystemExit(main())
