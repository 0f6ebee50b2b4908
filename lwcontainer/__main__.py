from lwcontainer.cli import main
raise SystemExit(main())
