using System.Net.Sockets;
using Modular.Agent.Daemon;

namespace Modular.Agent.Tests;

public sealed class DaemonSocketTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("modular-socket-test-").FullName;

    [Fact]
    public void Prepare_creates_the_directory_when_nothing_is_there()
    {
        var path = Path.Combine(_dir, "a", "b", "x.sock");

        Assert.Equal(DaemonSocket.Previous.Nothing, DaemonSocket.Prepare(path));
        Assert.True(Directory.Exists(Path.GetDirectoryName(path)));
    }

    [Fact]
    public void File_type_tells_a_socket_from_a_file()
    {
        var socketPath = Path.Combine(_dir, "s.sock");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(socketPath));
        var filePath = Path.Combine(_dir, "f");
        File.WriteAllText(filePath, "x");

        Assert.Equal(NativeMethods.SocketFileType, NativeMethods.FileTypeOf(socketPath));
        Assert.NotEqual(NativeMethods.SocketFileType, NativeMethods.FileTypeOf(filePath));
        Assert.Equal(-1, NativeMethods.FileTypeOf(Path.Combine(_dir, "absent")));
    }

    [Fact]
    public void Prepare_refuses_a_live_socket_and_a_regular_file()
    {
        var live = Path.Combine(_dir, "live.sock");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(live));
        listener.Listen();
        var regular = Path.Combine(_dir, "file.sock");
        File.WriteAllText(regular, "x");

        Assert.Contains("already running", Assert.Throws<InvalidOperationException>(() => DaemonSocket.Prepare(live)).Message, StringComparison.Ordinal);
        Assert.Contains("not a socket", Assert.Throws<InvalidOperationException>(() => DaemonSocket.Prepare(regular)).Message, StringComparison.Ordinal);
        Assert.True(File.Exists(regular));
        Assert.True(DaemonSocket.IsAnswering(live));
    }

    [Fact]
    public void Prepare_refuses_a_path_too_long_for_a_unix_socket()
    {
        var path = Path.Combine(_dir, new string('s', 120) + ".sock");

        Assert.Contains("longer than the 107 bytes", Assert.Throws<InvalidOperationException>(() => DaemonSocket.Prepare(path)).Message, StringComparison.Ordinal);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}
