from latentcc.cli import main

raise SystemExit(main())
