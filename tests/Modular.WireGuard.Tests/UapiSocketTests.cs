using System.Net.Sockets;
using System.Text;
using Modular.Abstractions.WireGuard;
using Modular.Testing;
using Modular.WireGuard.Uapi;

namespace Modular.WireGuard.Tests;

/// <summary>The UAPI unix-socket server: protocol framing, errors, cleanup, and the real `wg` tool.</summary>
public sealed class UapiSocketTests : IAsyncDisposable
{
    private static readonly WgKey PrivateKey = new(Enumerable.Range(1, 32).Select(i => (byte)i).ToArray());
    private static readonly WgKey PeerKey = new(Enumerable.Range(101, 32).Select(i => (byte)i).ToArray());

    private readonly string _directory = Path.Combine(Path.GetTempPath(), $"mdl-uapi-{Environment.ProcessId}-{Guid.NewGuid():N}");
    private readonly FakeHandler _handler = new();

    private sealed class FakeHandler : IUapiHandler
    {
        public List<string> Sets { get; } = [];

        public int SetResult { get; set; }

        public void IpcGet(TextWriter output)
        {
            output.Write($"private_key={PrivateKey.ToHex()}\nlisten_port=51820\n");
            output.Write($"public_key={PeerKey.ToHex()}\nendpoint=198.18.0.2:51821\nallowed_ip=100.64.0.2/32\n");
            output.Write("last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=0\nrx_bytes=1234\ntx_bytes=5678\npersistent_keepalive_interval=0\nprotocol_version=1\n");
        }

        public int IpcSet(TextReader input)
        {
            Sets.Add(input.ReadToEnd());
            return SetResult;
        }
    }

    private static async Task<string> ExchangeAsync(string path, string request)
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await socket.ConnectAsync(new UnixDomainSocketEndPoint(path));
        await socket.SendAsync(Encoding.UTF8.GetBytes(request));
        socket.Shutdown(SocketShutdown.Send);
        var response = new MemoryStream();
        var buffer = new byte[4096];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        int n;
        while ((n = await socket.ReceiveAsync(buffer, timeout.Token)) > 0)
        {
            response.Write(buffer, 0, n);
        }

        return Encoding.UTF8.GetString(response.ToArray());
    }

    [Fact]
    public async Task GetAndSetAnswerWithErrnoAndManyRequestsShareAConnection()
    {
        var path = Path.Combine(_directory, "mdltest.sock");
        await using var server = UapiServer.Start(path, _handler);
        _handler.SetResult = 0;

        var response = await ExchangeAsync(path, "get=1\n\nset=1\nlisten_port=4000\nreplace_peers=true\n\nget=1\n\n");

        var parts = response.Split("errno=0\n\n");
        Assert.Equal(4, parts.Length);
        Assert.StartsWith($"private_key={PrivateKey.ToHex()}\n", parts[0]);
        Assert.Equal(string.Empty, parts[1]);
        Assert.Contains("rx_bytes=1234\n", parts[2]);
        Assert.Equal(["listen_port=4000\nreplace_peers=true\n"], _handler.Sets);
        Assert.Equal("srw-------", Shell.Run("stat", $"-c %A {path}").Trim());
    }

    [Theory]
    [InlineData("bogus=1\n\n")]
    [InlineData("get=1\nextra\n\n")]
    [InlineData("GET=1\n\n")]
    public async Task MalformedRequestsGetEinval(string request)
    {
        var path = Path.Combine(_directory, "mdlbad.sock");
        await using var server = UapiServer.Start(path, _handler);

        Assert.Equal("errno=22\n\n", await ExchangeAsync(path, request));
        Assert.Empty(_handler.Sets);
    }

    [Fact]
    public async Task ALineWithoutEndIsRefusedAfterItsBoundNotBufferedForever()
    {
        var path = Path.Combine(_directory, "mdllong.sock");
        await using var server = UapiServer.Start(path, _handler);

        // 8 MiB of one "line" and no newline, the connection left open: an unbounded reader keeps
        // buffering and never answers; the bounded one answers EINVAL after 4 KiB and closes.
        using (var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(path));
            var chunk = Encoding.ASCII.GetBytes("set=1\nendpoint=" + new string('1', 64 * 1024 - 15));
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            try
            {
                for (var sent = 0; sent < 8 << 20; sent += chunk.Length)
                {
                    await socket.SendAsync(chunk, SocketFlags.None, timeout.Token);
                    chunk = Encoding.ASCII.GetBytes(new string('1', 64 * 1024));
                }
            }
            catch (SocketException)
            {
                // The server closed the connection under our feet: what a bounded reader does.
            }

            var response = new MemoryStream();
            var buffer = new byte[4096];
            int n;
            while ((n = await ReceiveOrZeroAsync(socket, buffer, timeout.Token)) > 0)
            {
                response.Write(buffer, 0, n);
            }

            Assert.Equal("errno=22\n\n", Encoding.UTF8.GetString(response.ToArray()));
        }

        Assert.Empty(_handler.Sets);
        // The server goes on serving.
        Assert.EndsWith("errno=0\n\n", await ExchangeAsync(path, "get=1\n\n"), StringComparison.Ordinal);
    }

    private static async Task<int> ReceiveOrZeroAsync(Socket socket, byte[] buffer, CancellationToken cancellationToken)
    {
        try
        {
            return await socket.ReceiveAsync(buffer, SocketFlags.None, cancellationToken);
        }
        catch (SocketException)
        {
            // A reset after the answer was read: the end of the connection.
            return 0;
        }
    }

    [Fact]
    public async Task TheHandlersErrnoIsPassedOnAndATruncatedSetIsNotApplied()
    {
        var path = Path.Combine(_directory, "mdlerr.sock");
        await using var server = UapiServer.Start(path, _handler);
        _handler.SetResult = 22;

        // Negated on the wire, as wireguard-go does: `wg set` turns errno=-22 into EINVAL.
        Assert.Equal("errno=-22\n\n", await ExchangeAsync(path, "set=1\npublic_key=zz\n\n"));
        Assert.Equal(string.Empty, await ExchangeAsync(path, "set=1\nlisten_port=1\n"));
        Assert.Single(_handler.Sets);
    }

    [Fact]
    public async Task SocketIsRemovedOnDisposeAndAStaleOneIsReplaced()
    {
        var path = Path.Combine(_directory, "mdlstale.sock");
        Directory.CreateDirectory(_directory);
        using (var stale = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            stale.Bind(new UnixDomainSocketEndPoint(path));
        }

        var server = UapiServer.Start(path, _handler);
        Assert.Throws<IOException>(() => UapiServer.Start(path, _handler));
        Assert.Contains("errno=0", await ExchangeAsync(path, "get=1\n\n"));

        await server.DisposeAsync();

        Assert.False(File.Exists(path));
    }

    [Fact]
    public async Task TheReadOnlyWrapperAnswersGetAndRefusesSetWithEpermAndOneWarningPerRequest()
    {
        var path = Path.Combine(_directory, "mdlro.sock");
        var logger = new ListLogger();
        await using var server = UapiServer.Start(path, new ReadOnlyUapiHandler(_handler, "mdlro", logger));

        var response = await ExchangeAsync(path, "get=1\n\nset=1\nprivate_key=" + PrivateKey.ToHex() + "\n\nset=1\nlisten_port=1\n\n");

        var parts = response.Split("\n\n");
        Assert.Contains("rx_bytes=1234\n", parts[0]);
        Assert.EndsWith("errno=0", parts[0]);
        Assert.Equal(["errno=-1", "errno=-1", ""], parts[1..]); // EPERM, negated as `wg set` expects
        Assert.Empty(_handler.Sets); // nothing reached the device
        Assert.Equal(2, logger.Warnings.Count);
        Assert.All(logger.Warnings, w => Assert.Contains("mdlro", w, StringComparison.Ordinal));
        Assert.All(logger.Warnings, w => Assert.Contains("the agent owns this interface's configuration; change it through management", w, StringComparison.Ordinal));
        Assert.DoesNotContain(logger.Entries, e => e.Message.Contains(PrivateKey.ToHex(), StringComparison.Ordinal));
    }

    [Fact]
    public async Task TryStartOnAPathAnotherProcessServesWarnsOnceReturnsNullAndLeavesTheOtherServing()
    {
        var path = Path.Combine(_directory, "mdlbusy.sock");
        await using var first = UapiServer.Start(path, _handler);
        var logger = new ListLogger();

        var second = UapiServer.TryStart(path, _handler, "mdlbusy", logger);

        Assert.Null(second);
        var warning = Assert.Single(logger.Warnings);
        Assert.Contains("`wg show mdlbusy` is not available", warning, StringComparison.Ordinal);
        Assert.Contains("served by another process", warning, StringComparison.Ordinal);
        Assert.Contains("errno=0", await ExchangeAsync(path, "get=1\n\n"));
    }

    [Fact]
    public async Task TryStartOnAFreePathServes()
    {
        var path = Path.Combine(_directory, "mdlfree.sock");
        var logger = new ListLogger();

        await using var server = UapiServer.TryStart(path, _handler, "mdlfree", logger);

        Assert.NotNull(server);
        Assert.Empty(logger.Entries);
        Assert.Contains("errno=0", await ExchangeAsync(path, "get=1\n\n"));
    }

    [SkippableFact]
    public async Task TheWgToolShowsAndSetsThroughTheSocket()
    {
        Prerequisites.RequireRoot();
        Prerequisites.RequireTool("wg");
        var iface = $"mdlu{Environment.ProcessId % 100000}";
        await using var server = UapiServer.Start(UapiServer.PathFor(iface), _handler);

        var dump = Shell.Run("wg", $"show {iface} dump").Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var peer = PeerKey.ToBase64();
        var setResult = Shell.TryRun("wg", $"set {iface} listen-port 4321 peer {peer} allowed-ips 100.64.0.9/32");

        Assert.Equal(2, dump.Length);
        Assert.StartsWith(PrivateKey.ToBase64() + "\t", dump[0]);
        Assert.Equal([peer, "(none)", "198.18.0.2:51821", "100.64.0.2/32", "1700000000", "1234", "5678", "off"], dump[1].Split('\t'));
        Assert.Equal(0, setResult.ExitCode);
        var set = Assert.Single(_handler.Sets);
        Assert.Contains("listen_port=4321\n", set);
        Assert.Contains($"public_key={PeerKey.ToHex()}\n", set);
        Assert.Contains("allowed_ip=100.64.0.9/32\n", set);
    }

    [SkippableFact]
    public async Task TheWgToolShowsAReadOnlySocketAndReportsARefusedSetAsOperationNotPermitted()
    {
        Prerequisites.RequireRoot();
        Prerequisites.RequireTool("wg");
        var iface = $"mdlr{Environment.ProcessId % 100000}";
        var logger = new ListLogger();
        await using var server = UapiServer.Start(UapiServer.PathFor(iface), new ReadOnlyUapiHandler(_handler, iface, logger));

        var show = Shell.TryRun("wg", $"show {iface} peers");
        var set = Shell.TryRun("wg", $"set {iface} listen-port 1");

        Assert.Equal(0, show.ExitCode);
        Assert.Equal(PeerKey.ToBase64(), show.Output.Trim());
        Assert.NotEqual(0, set.ExitCode);
        Assert.Contains("Operation not permitted", set.Error, StringComparison.Ordinal);
        Assert.Empty(_handler.Sets);
        Assert.Single(logger.Warnings);
    }

    public ValueTask DisposeAsync()
    {
        if (Directory.Exists(_directory))
        {
            Directory.Delete(_directory, recursive: true);
        }

        return ValueTask.CompletedTask;
    }
}
