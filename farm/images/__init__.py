"""Target images: content, Debian base bootstrap, wheelhouses and site-packages, all made on the host."""
