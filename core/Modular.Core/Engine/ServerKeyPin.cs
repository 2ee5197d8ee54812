using Modular.Abstractions.WireGuard;

namespace Modular.Core.Engine;

/// <summary>
/// Management's key, pinned on first contact (trust on first use) in <c>state_dir/server.pub</c> (base64, one line,
/// 0644: it is a public key). The key is announced unauthenticated at every login; once pinned, a server announcing
/// another key is refused (<see cref="ServerKeyMismatchException"/>) before anything is sent to it. Deleting the file
/// makes the agent pin whatever key it sees at its next login, which is how a deliberately changed server key is
/// accepted. Read at every login, so no restart is needed.
/// </summary>
internal sealed class ServerKeyPin(string stateDir)
{
    public string Path { get; } = System.IO.Path.Combine(stateDir, "server.pub");

    /// <summary>The pinned key; null when none is pinned yet.</summary>
    /// <exception cref="InvalidDataException">The file holds no key (edited by hand, truncated).</exception>
    public WgKey? Read()
    {
        string text;
        try
        {
            text = File.ReadAllText(Path).Trim();
        }
        catch (FileNotFoundException)
        {
            return null;
        }
        catch (DirectoryNotFoundException)
        {
            return null;
        }

        return WgKey.TryParse(text, out var key)
            ? key
            : throw new InvalidDataException($"{Path} does not hold a base64 public key; delete it to pin the management server's key again");
    }

    /// <summary>Refuses <paramref name="announced"/> when another key is pinned.</summary>
    /// <exception cref="ServerKeyMismatchException">The server announced another key than the pinned one.</exception>
    public void Check(WgKey announced, Uri server)
    {
        if (Read() is { } pinned && pinned != announced)
        {
            throw new ServerKeyMismatchException(
                $"management at {server} presents the server key {announced.ToBase64()}, which differs from the pinned key {pinned.ToBase64()} in {Path}: " +
                $"refusing to talk to it (an impostor, or the server's key changed). If the key changed on purpose, delete {Path}; the agent pins the key it sees at its next login");
        }
    }

    /// <summary>Pins <paramref name="key"/> when nothing is pinned yet; true when it did (the first contact).</summary>
    public bool PinIfNone(WgKey key)
    {
        if (Read() is not null)
        {
            return false;
        }

        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(Path)!);
        var temporary = Path + ".tmp";
        File.WriteAllText(temporary, key.ToBase64() + "\n");
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(temporary, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        }

        File.Move(temporary, Path, overwrite: true);
        return true;
    }
}

/// <summary>Management announced another key than the pinned one (see <see cref="ServerKeyPin"/>).</summary>
public sealed class ServerKeyMismatchException : Exception
{
    public ServerKeyMismatchException()
    {
    }

    public ServerKeyMismatchException(string message)
        : base(message)
    {
    }

    public ServerKeyMismatchException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
