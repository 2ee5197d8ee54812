using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Modular.Control.Stun;
using Modular.Server.Hosting;

namespace Modular.Server.Stun;

/// <summary>
/// RFC 5389 Binding responder: answers each well-formed Binding Request with the source address it
/// came from (XOR-MAPPED-ADDRESS); anything else is dropped and counted. One dedicated thread, no
/// per-packet allocation.
/// </summary>
public sealed class StunServer : IHostedService, IDisposable
{
    private readonly IPEndPoint _listen;
    private readonly ILogger<StunServer> _logger;
    private Socket? _socket;
    private Thread? _thread;
    private long _answered;
    private long _dropped;

    public StunServer(IPEndPoint listen, ILogger<StunServer> logger)
    {
        _listen = listen;
        _logger = logger;
    }

    public IPEndPoint? LocalEndPoint => _socket?.LocalEndPoint as IPEndPoint;

    public long Answered => Interlocked.Read(ref _answered);

    public long Dropped => Interlocked.Read(ref _dropped);

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _socket = UdpEndpoint.Bind("stun", _listen, 1 << 20);
        _thread = new Thread(Run) { IsBackground = true, Name = "stun" };
        _thread.Start();
        _logger.LogInformation("STUN listening on udp {Endpoint}", LocalEndPoint);
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken)
    {
        _socket?.Dispose();
        _thread?.Join(TimeSpan.FromSeconds(5));
        return Task.CompletedTask;
    }

    private void Run()
    {
        var socket = _socket!;
        var from = new SocketAddress(socket.AddressFamily);
        var request = new byte[1500];
        var response = new byte[StunMessage.MaxResponseSize];
        Span<byte> address = stackalloc byte[16];
        while (true)
        {
            int n;
            try
            {
                n = socket.ReceiveFrom(request, SocketFlags.None, from);
            }
            catch (ObjectDisposedException)
            {
                return;
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionReset or SocketError.MessageSize)
            {
                Interlocked.Increment(ref _dropped);
                continue;
            }
            catch (SocketException)
            {
                return; // closed underneath us
            }

            if (!StunMessage.IsBindingRequest(request.AsSpan(0, n)) || !UdpEndpoint.TryRead(from, address, out var length, out var port))
            {
                Interlocked.Increment(ref _dropped);
                continue;
            }

            var written = StunMessage.WriteBindingSuccess(response, request, address[..length], port);
            try
            {
                socket.SendTo(response.AsSpan(0, written), SocketFlags.None, from);
                Interlocked.Increment(ref _answered);
            }
            catch (SocketException)
            {
                Interlocked.Increment(ref _dropped);
            }
            catch (ObjectDisposedException)
            {
                return;
            }
        }
    }

    /// <summary>Stops as <see cref="StopAsync"/> does (the host disposes without stopping when another component fails to start).</summary>
    public void Dispose() => StopAsync(CancellationToken.None).GetAwaiter().GetResult();
}
