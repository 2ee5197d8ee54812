using System.Net.Sockets;

namespace Modular.Agent.Daemon;

/// <summary>
/// The unix socket the daemon serves the CLI on: prepares its path before Kestrel binds
/// (refusing to take over a live daemon's socket, replacing a stale one), sets its mode
/// after, and removes it on the way out.
/// </summary>
internal static class DaemonSocket
{
    /// <summary>Owner and group may talk to the daemon; nobody else.</summary>
    public const UnixFileMode SocketMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite;

    public const int MaxPathBytes = 107;

    /// <summary>What was at the socket path before we bind.</summary>
    public enum Previous
    {
        Nothing,
        StaleSocketRemoved,
    }

    /// <summary>Creates the directory and clears a stale socket; throws when the path is taken.</summary>
    /// <exception cref="InvalidOperationException">A live daemon answers there, or the path is not a socket.</exception>
    public static Previous Prepare(string path)
    {
        // sockaddr_un holds 108 bytes with the terminating NUL; a longer path cannot be bound at all.
        if (System.Text.Encoding.UTF8.GetByteCount(path) > MaxPathBytes)
        {
            throw new InvalidOperationException(
                $"socket path {path} is longer than the {MaxPathBytes} bytes a unix socket allows; choose a shorter `socket` or --socket");
        }

        var directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (!string.IsNullOrEmpty(directory))
        {
            // Others must be able to traverse it for group access to the socket itself.
            Directory.CreateDirectory(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
                | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        }

        if (NativeMethods.FileTypeOf(path) < 0)
        {
            return Previous.Nothing;
        }

        if (!IsSocket(path))
        {
            throw new InvalidOperationException($"{path} exists and is not a socket; refusing to replace it");
        }

        if (IsAnswering(path))
        {
            throw new InvalidOperationException(
                $"another modular daemon is already running at {path} (stop it with `modular down --socket {path}`)");
        }

        File.Delete(path);
        return Previous.StaleSocketRemoved;
    }

    /// <summary>Whether a process accepts connections on the socket at <paramref name="path"/>.</summary>
    public static bool IsAnswering(string path)
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Connect(new UnixDomainSocketEndPoint(path));
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
        catch (ArgumentException)
        {
            // Not a path a unix socket can have (too long): nobody can listen there.
            return false;
        }
    }

    public static void SetMode(string path) => File.SetUnixFileMode(path, SocketMode);

    /// <summary>Removes the socket file if it is still there; never throws on the way out.</summary>
    public static void Remove(string path)
    {
        try
        {
            if (IsSocket(path))
            {
                File.Delete(path);
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    private static bool IsSocket(string path) => NativeMethods.FileTypeOf(path) == NativeMethods.SocketFileType;
}
