"""hello-svc: the example service dockship bakes and rolls."""
