"""Entry point of the bundled app: PyInstaller runs this file as ``__main__``.

``app.main`` stays an ordinary module inside the bundle, so its ``__file__``-relative data files
(``app/data``, ``app/i18n``) resolve to ``sys._MEIPASS/app/...`` exactly as in the checkout.
"""

import multiprocessing
import sys

from app.main import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # a frozen child process must not start a second app
    sys.exit(main())
