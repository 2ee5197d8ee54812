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
    private readonly ILogger _logger;
    private readonly ManualResetEventSlim _stopped = new();
    private Socket? _socket;
    private Thread? _thread;
    private long _answered;
    private long _dropped;
    private long _receiveErrors;
    private volatile bool _stopping;

    public StunServer(IPEndPoint listen, ILogger logger)
    {
        _listen = listen;
        _logger = logger;
    }

    public IPEndPoint? LocalEndPoint => _socket?.LocalEndPoint as IPEndPoint;

    public long Answered => Interlocked.Read(ref _answered);

    public long Dropped => Interlocked.Read(ref _dropped);

    /// <summary>Receives that failed with an unexpected error (the loop goes on after a short pause).</summary>
    public long ReceiveErrors => Interlocked.Read(ref _receiveErrors);

    /// <summary>Test seam: called before each receive; an error it returns stands in for a failed receive.</summary>
    internal Func<SocketError>? InjectReceiveError { get; set; }

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
        if (_stopping)
        {
            return Task.CompletedTask; // stopped already (Dispose after StopAsync)
        }

        _stopping = true;
        _stopped.Set();
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
        var receiveErrors = new ReceiveErrorPause(_logger, "STUN");
        while (true)
        {
            int n;
            try
            {
                if (InjectReceiveError?.Invoke() is { } injected and not SocketError.Success)
                {
                    throw new SocketException((int)injected);
                }

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
            catch (SocketException) when (_stopping)
            {
                return; // closed underneath us
            }
            catch (SocketException e)
            {
                // An unexpected error must not end STUN for good (with no word).
                Interlocked.Increment(ref _receiveErrors);
                _stopped.Wait(receiveErrors.OnError(e.SocketErrorCode.ToString()));
                continue;
            }

            receiveErrors.OnSuccess();

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
    public void Dispose()
    {
        StopAsync(CancellationToken.None).GetAwaiter().GetResult();
        _stopped.Dispose();
    }
}
