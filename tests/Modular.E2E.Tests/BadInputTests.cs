using System.Net;
using System.Net.Sockets;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using Modular.Control.Crypto;
using Modular.Control.Management;
using Modular.Control.Signal;
using Xunit.Abstractions;

namespace Modular.E2E.Tests;

/// <summary>Forged signal messages, a wrong setup key and malformed gRPC payloads: refused, nothing crashes.</summary>
public sealed class BadInputTests(ITestOutputHelper output)
{
    [SkippableFact]
    public async Task Forged_signal_wrong_setup_key_and_malformed_grpc_are_rejected_without_crashing()
    {
        MeshRig.RequirePrerequisites();
        using var rig = new MeshRig(output, "b");
        rig.StartServer();
        var key = rig.CreateSetupKey();
        var a1 = rig.AddAgent("a1");
        var a2 = rig.AddAgent("a2");
        a1.WriteConfig(key, "[proxy]\nkind = \"udp\"");
        a2.WriteConfig(key, "[proxy]\nkind = \"udp\"");
        a1.Start();
        a2.Start();
        rig.WaitUntil(() => a1.IsConnected("a2") && a2.IsConnected("a1"), TimeSpan.FromSeconds(90), "a1 and a2 Connected", () => MeshTests.Diagnostics(rig, ["a1", "a2"]));
        var a1Key = WgKeyOf(a1.Status()!.Value.GetProperty("public_key").GetString()!);

        // A wrong setup key: the agent exits with a clear error instead of running unregistered.
        var wrong = rig.AddAgent("w1");
        wrong.WriteConfig("mdl-this-key-does-not-exist-000000");
        wrong.Start();
        Assert.True(wrong.Process!.WaitForExit(60_000), "an agent with a wrong setup key exits");
        wrong.Process.WaitForExit(); // flushes the captured output
        Assert.NotEqual(0, wrong.Process.ExitCode);
        Assert.Contains("refused the setup key", wrong.Output + wrong.Log, StringComparison.OrdinalIgnoreCase);

        using var channel = ChannelInto(rig);

        // Forged signal: authenticated as one key, body sealed by another (or garbage) — a1 drops it.
        using var mallory = X25519KeyPair.Generate();
        using var other = X25519KeyPair.Generate();
        await new ManagementClient(channel, mallory).RegisterAsync(key, new PeerMeta { Hostname = "mallory" }, CancellationToken.None);
        using (var call = new SignalExchange.SignalExchangeClient(channel).Connect())
        {
            await call.RequestStream.WriteAsync(new SignalFrame { Hello = new Hello { WgPubKey = ByteString.CopyFrom(mallory.PublicKey.ToArray()) } });
            Assert.True(await call.ResponseStream.MoveNext(CancellationToken.None));
            var challenge = call.ResponseStream.Current.Challenge;
            var serverKey = new Modular.Abstractions.WireGuard.WgKey(challenge.ServerKey.Span);
            var proof = Envelope.Seal(mallory, serverKey, Envelope.Purposes.SignalAuth, challenge.Nonce.Span, challenge.Nonce.Span);
            await call.RequestStream.WriteAsync(new SignalFrame { Proof = new Proof { Box = ByteString.CopyFrom(proof) } });
            Assert.True(await call.ResponseStream.MoveNext(CancellationToken.None));
            Assert.Equal(SignalFrame.KindOneofCase.Ready, call.ResponseStream.Current.KindCase);

            var offer = new SignalBody { Type = SignalBody.Types.Type.Offer, Ufrag = "abcdefgh", Pwd = "abcdefghijklmnopqrstuvwx", SessionId = 7 }.ToByteArray();
            byte[][] bodies =
            [
                Envelope.Seal(other, a1Key, Envelope.Purposes.Signal, offer),   // sealed by someone else
                [1, 2, 3, 4, 5],                                                 // garbage
                new byte[5000],                                                  // zeros
            ];
            foreach (var body in bodies)
            {
                await call.RequestStream.WriteAsync(new SignalFrame { Message = new SignalMessage { Recipient = ByteString.CopyFrom(a1Key.ToArray()), Body = ByteString.CopyFrom(body) } });
            }

            // Well sealed by the sender, but its contents are hostile: candidates that are not addresses, bad credentials.
            var hostile = new SignalBody { Type = SignalBody.Types.Type.Offer, Ufrag = "x", Pwd = "y", SessionId = 1 };
            hostile.Candidates.Add("host 0.0.0.0:0");
            hostile.Candidates.Add(new string('9', 5000));
            await call.RequestStream.WriteAsync(new SignalFrame { Message = new SignalMessage { Recipient = ByteString.CopyFrom(a1Key.ToArray()), Body = ByteString.CopyFrom(Envelope.Seal(mallory, a1Key, Envelope.Purposes.Signal, hostile.ToByteArray())) } });
            await call.RequestStream.CompleteAsync();

            // Let the server route everything before the stream goes away.
            using var drain = new CancellationTokenSource(TimeSpan.FromSeconds(3));
            try
            {
                while (await call.ResponseStream.MoveNext(drain.Token))
                {
                }
            }
            catch (RpcException)
            {
            }
        }

        rig.WaitUntil(() => a1.Log.Contains("failed verification", StringComparison.Ordinal), TimeSpan.FromSeconds(30), "a1 logging the forged signal messages", () => a1.Log);

        // Malformed management payloads: refused with a status code, the server keeps serving.
        var management = new ManagementService.ManagementServiceClient(channel);
        foreach (var request in new[]
        {
            new EncryptedMessage(),
            new EncryptedMessage { WgPubKey = ByteString.CopyFrom(new byte[7]), Body = ByteString.CopyFrom(new byte[3]) },
            new EncryptedMessage { WgPubKey = ByteString.CopyFrom(mallory.PublicKey.ToArray()), Body = ByteString.CopyFrom(new byte[200]) },
        })
        {
            var login = await Assert.ThrowsAsync<RpcException>(async () => await management.LoginAsync(request));
            Assert.True(login.StatusCode is StatusCode.InvalidArgument or StatusCode.PermissionDenied or StatusCode.Unauthenticated, $"login: {login.StatusCode}");
            var register = await Assert.ThrowsAsync<RpcException>(async () => await management.RegisterAsync(request));
            Assert.True(register.StatusCode is StatusCode.InvalidArgument or StatusCode.PermissionDenied or StatusCode.Unauthenticated, $"register: {register.StatusCode}");
        }

        // Nothing crashed: both agents still run, still connected, the tunnel still carries traffic.
        Assert.False(a1.Process!.HasExited);
        Assert.False(a2.Process!.HasExited);
        Assert.True(a1.IsConnected("a2"));
        Assert.True(a1.Ping(a2.OverlayIp!));
        Assert.NotNull(await new ManagementService.ManagementServiceClient(channel).GetServerKeyAsync(new Empty()));
    }

    private static Modular.Abstractions.WireGuard.WgKey WgKeyOf(string base64) => Modular.Abstractions.WireGuard.WgKey.Parse(base64);

    /// <summary>A gRPC channel whose sockets are created inside the server's namespace.</summary>
    internal static GrpcChannel ChannelInto(MeshRig rig)
    {
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (context, cancellationToken) =>
            {
                var socket = NamespaceSocket.Create(rig.Server.Name, AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                try
                {
                    await socket.ConnectAsync(new IPEndPoint(IPAddress.Parse(MeshRig.ServerIp), context.DnsEndPoint.Port), cancellationToken);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        };
        return GrpcChannel.ForAddress($"http://{MeshRig.ServerIp}:33073", new GrpcChannelOptions { HttpHandler = handler, DisposeHttpClient = true });
    }
}
