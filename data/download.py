"""Downloads of released files (archives and label files), md5 checked, leaving nothing
behind when they fail; none at all inside no_downloads() (checking a finished run's data
must never fetch anything)."""
import contextlib
import hashlib
import os

from errors import UserError

_ALLOWED = [True]


@contextlib.contextmanager
def no_downloads():
    """Inside, a file that would be downloaded is a UserError instead."""
    _ALLOWED.append(False)
    try:
        yield
    finally:
        _ALLOWED.pop()


def check_download_allowed(url, path):
    """A file about to be downloaded: refused inside no_downloads(), and where a symbolic
    link to nothing stands in its place (the file was meant to be elsewhere)."""
    if os.path.islink(path) and not os.path.exists(path):
        raise UserError(f"{path} is a symbolic link to nothing ({os.readlink(path)}): remove the link "
                        "or create its target")
    if not _ALLOWED[-1]:
        raise UserError(f"{path} is missing (it would be downloaded from {url})")


def file_md5(path):
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


@contextlib.contextmanager
def folders_made_for(folder):
    """Create `folder` (and its missing parents) for a download; if the download fails,
    remove again those it created that are still empty, so a refused run leaves nothing."""
    made, path = [], os.path.abspath(folder)
    while not os.path.exists(path):
        made.append(path)
        path = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    try:
        yield
    except BaseException:
        for path in made:  # deepest first
            with contextlib.suppress(OSError):
                os.rmdir(path)
        raise


def download_file(url, path, md5, what, way_out):
    """Download `url` to `path` with torchvision's utility (md5 checked). Offline, refused
    or damaged, it ends in one UserError naming `what`, the file, the URL and `way_out`."""
    from torchvision.datasets.utils import download_url

    check_download_allowed(url, path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        with folders_made_for(folder):
            download_url(url, folder, os.path.basename(path), md5=md5)
    except Exception as exc:  # offline, refused, or a damaged download: all end the same way
        raise UserError(f"{what} {path} is missing and could not be downloaded "
                        f"({exc.__class__.__name__}: {str(exc)[:200]}). Download {url} (md5 {md5}) "
                        f"to {path}, {way_out}") from None
    if not os.path.isfile(path):
        raise UserError(f"downloading {url} did not produce {path}; download it by hand")
    return path
