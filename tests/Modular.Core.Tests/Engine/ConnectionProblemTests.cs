using System.Net;
using System.Net.Sockets;
using System.Security.Authentication;
using Grpc.Core;
using Modular.Control;
using Modular.Control.Management;

namespace Modular.Core.Tests.Engine;

/// <summary>Control-plane connection failures read as one line saying which failure it was.</summary>
public sealed class ConnectionProblemTests
{
    private static readonly Uri Target = new("https://mgmt.example.test:33073");

    private static RpcException Unavailable(Exception debug)
        => new(new Grpc.Core.Status(StatusCode.Unavailable, "Error connecting to subchannel.", debug));

    [Fact]
    public void A_refused_connection_names_host_and_port()
        => Assert.Equal("connection refused by mgmt.example.test:33073",
            ConnectionProblem.Describe(Unavailable(new SocketException((int)SocketError.ConnectionRefused)), Target));

    [Theory]
    [InlineData(SocketError.HostUnreachable)]
    [InlineData(SocketError.NetworkUnreachable)]
    [InlineData(SocketError.TimedOut)]
    public void An_unreachable_host_is_no_route_or_timed_out(SocketError error)
        => Assert.Equal("mgmt.example.test:33073: no route / timed out", ConnectionProblem.Describe(Unavailable(new SocketException((int)error)), Target));

    [Theory]
    [InlineData(SocketError.HostNotFound)]
    [InlineData(SocketError.TryAgain)]
    [InlineData(SocketError.NoData)]
    public void An_unknown_name_cannot_be_resolved(SocketError error)
        => Assert.Equal("cannot resolve mgmt.example.test", ConnectionProblem.Describe(Unavailable(new SocketException((int)error)), Target));

    [Fact]
    public void A_name_resolution_error_inside_an_http_request_exception_cannot_be_resolved()
        => Assert.Equal("cannot resolve mgmt.example.test",
            ConnectionProblem.Describe(Unavailable(new HttpRequestException(HttpRequestError.NameResolutionError, "Name or service not known (mgmt.example.test:33073)")), Target));

    [Fact]
    public void A_tls_handshake_with_a_plaintext_server_says_to_use_http()
    {
        var chain = new HttpRequestException(HttpRequestError.SecureConnectionError, "The SSL connection could not be established, see inner exception.",
            new AuthenticationException("Cannot determine the frame size or a corrupted frame was received."));

        Assert.Equal("TLS handshake failed with mgmt.example.test:33073: the server does not speak TLS (is it plaintext? use http://)",
            ConnectionProblem.Describe(Unavailable(chain), Target));
    }

    [Fact]
    public void An_untrusted_certificate_says_so_and_points_at_tls_ca()
    {
        var described = ConnectionProblem.Describe(Unavailable(new AuthenticationException("The remote certificate is invalid because of errors in the certificate chain: UntrustedRoot")), Target);

        Assert.StartsWith("TLS handshake failed with mgmt.example.test:33073: the server's certificate is not trusted", described, StringComparison.Ordinal);
        Assert.Contains("tls_ca", described, StringComparison.Ordinal);
    }

    [Fact]
    public void Other_rpc_failures_keep_code_and_detail_on_one_line()
        => Assert.Equal("Internal: boom", ConnectionProblem.Describe(new RpcException(new Grpc.Core.Status(StatusCode.Internal, "boom")), Target));

    [Fact]
    public void Without_a_target_the_server_is_named_generically()
        => Assert.Equal("connection refused by the server", ConnectionProblem.Describe(Unavailable(new SocketException((int)SocketError.ConnectionRefused))));

    // Real connections, loopback only (and a name under .invalid, which never resolves).

    private static async Task<string> RealFailureAsync(string url)
    {
        using var channel = ControlChannel.Create(url);
        var client = new ManagementService.ManagementServiceClient(channel);
        var e = await Assert.ThrowsAnyAsync<Exception>(async () => await client.GetServerKeyAsync(new Empty(), deadline: DateTime.UtcNow.AddSeconds(20)));
        var described = ConnectionProblem.Describe(e, new Uri(url));
        Assert.DoesNotContain('\n', described);
        return described;
    }

    [Fact]
    public async Task A_closed_loopback_port_is_connection_refused()
    {
        int port;
        using (var listener = new TcpListener(IPAddress.Loopback, 0))
        {
            listener.Start();
            port = ((IPEndPoint)listener.LocalEndpoint).Port;
        }

        Assert.Equal($"connection refused by 127.0.0.1:{port}", await RealFailureAsync($"http://127.0.0.1:{port}"));
    }

    [Fact]
    public async Task A_name_that_never_resolves_cannot_be_resolved()
        => Assert.Equal("cannot resolve nonexistent.invalid", await RealFailureAsync("http://nonexistent.invalid:33073"));

    [Fact]
    public async Task Https_against_a_plaintext_http2_server_says_it_does_not_speak_tls()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var server = Task.Run(async () =>
        {
            // What a plaintext HTTP/2 server sends first: its SETTINGS frame (then it closes on the ClientHello).
            using var client = await listener.AcceptTcpClientAsync();
            var stream = client.GetStream();
            await stream.WriteAsync(new byte[] { 0, 0, 0, 4, 0, 0, 0, 0, 0 });
            var buffer = new byte[1024];
            _ = await stream.ReadAsync(buffer);
        });

        Assert.Equal($"TLS handshake failed with 127.0.0.1:{port}: the server does not speak TLS (is it plaintext? use http://)",
            await RealFailureAsync($"https://127.0.0.1:{port}"));
        listener.Stop();
        await server.WaitAsync(TimeSpan.FromSeconds(10)).ContinueWith(_ => { }, TaskScheduler.Default);
    }
}
