using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;

namespace Modular.Control.Stun;

/// <summary>Asks a STUN server which address and port it sees a UDP socket as (the NAT mapping).</summary>
public static class StunClient
{
    /// <summary>
    /// Sends Binding Requests from <paramref name="socket"/> (retrying up to <paramref name="attempts"/> times,
    /// waiting <paramref name="perAttempt"/> each) and returns the mapped address from the matching response.
    /// Replies from other sources or transactions are ignored.
    /// </summary>
    /// <exception cref="TimeoutException">No valid answer.</exception>
    public static async Task<IPEndPoint> QueryAsync(Socket socket, IPEndPoint server, CancellationToken cancellationToken, int attempts = 3, TimeSpan? perAttempt = null)
    {
        var transactionId = new byte[StunMessage.TransactionIdSize];
        RandomNumberGenerator.Fill(transactionId);
        var request = new byte[StunMessage.HeaderSize];
        StunMessage.WriteBindingRequest(request, transactionId);
        var buffer = new byte[1500];
        for (var attempt = 0; attempt < attempts; attempt++)
        {
            await socket.SendToAsync(request, SocketFlags.None, server, cancellationToken);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(perAttempt ?? TimeSpan.FromSeconds(1));
            try
            {
                while (true)
                {
                    var result = await socket.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(server.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0), timeout.Token);
                    if (result.RemoteEndPoint is IPEndPoint from && from.Equals(server)
                        && StunMessage.TryReadBindingSuccess(buffer.AsSpan(0, result.ReceivedBytes), transactionId, out var mapped) && mapped is not null)
                    {
                        return mapped;
                    }
                }
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                // This attempt timed out; send again.
            }
        }

        throw new TimeoutException($"No STUN answer from {server} after {attempts} attempts.");
    }

    /// <summary>Queries from a fresh socket bound to an ephemeral port.</summary>
    public static async Task<IPEndPoint> QueryAsync(IPEndPoint server, CancellationToken cancellationToken)
    {
        using var socket = new Socket(server.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(server.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0));
        return await QueryAsync(socket, server, cancellationToken);
    }
}
