from tlsrpt_lmtp.cli import main

raise SystemExit(main())
