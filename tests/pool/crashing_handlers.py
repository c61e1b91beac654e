"""A handler module whose children die shortly after they boot: a crash loop."""

import os
import threading

threading.Timer(0.3, os._exit, args=(17,)).start()
