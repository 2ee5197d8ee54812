using System.CommandLine;
using System.Text.Json;
using Modular.Server.Cli;

namespace Modular.Server.Networks;

/// <summary>`modular-server dns ...`: the mesh zone (from server.toml) and the nameserver groups agents forward to.</summary>
internal static class DnsCommands
{
    public static void AddTo(RootCommand root, Option<string> config, CliDefaults defaults)
    {
        var showJson = new Option<bool>("--json") { Description = "Print JSON" };
        var show = new Command("show", "Show the mesh zone (account dns_domain) and how other names are forwarded") { showJson };
        show.SetAction((parse, ct) => ServerCli.WithStoreAsync(parse.GetValue(config), defaults, async (store, cfg) =>
        {
            var groups = await store.ListNameserverGroupsAsync(ct);
            if (parse.GetValue(showJson))
            {
                Console.Out.WriteLine(JsonSerializer.Serialize(new { Zone = cfg.Account.DnsDomain, NameserverGroups = groups.Count, DefaultGroup = groups.FirstOrDefault(g => g.IsDefault)?.Name }, ServerCli.Json));
                return 0;
            }

            Console.Out.WriteLine($"zone: {cfg.Account.DnsDomain} (every peer is <label>.{cfg.Account.DnsDomain}; agents answer it on their overlay address, port 53)");
            Console.Out.WriteLine($"nameserver groups: {groups.Count}");
            foreach (var g in groups)
            {
                Console.Out.WriteLine($"  {g.Name}: {(g.IsDefault ? "every other name" : string.Join(", ", g.Domains))} -> {string.Join(", ", g.Nameservers)}");
            }

            if (!groups.Any(g => g.IsDefault))
            {
                Console.Out.WriteLine("  other names: REFUSED (no default group)");
            }

            return 0;
        }, ct));

        var name = new Option<string>("--name") { Description = "Group name", Required = true };
        var nameservers = new Option<string[]>("--nameserver") { Description = "Upstream IP[:PORT] (repeatable; tried in order)", Required = true };
        var domains = new Option<string[]>("--domain") { Description = "Domain this group answers, with its subdomains (repeatable); none: the default group" };
        var add = new Command("add", "Add a nameserver group") { name, nameservers, domains };
        add.SetAction((parse, ct) => ServerCli.WithStoreAsync(parse.GetValue(config), defaults, async (store, cfg) =>
        {
            var spec = DnsValidator.Validate(new NewNameserverGroup(parse.GetValue(name) ?? "", parse.GetValue(nameservers) ?? [], parse.GetValue(domains) ?? []));
            DnsValidator.RefuseZoneDomains(spec, cfg.Account.DnsDomain);
            var group = await store.CreateNameserverGroupAsync(spec, ct);
            Console.Out.WriteLine(group.Id);
            Console.Error.WriteLine($"created nameserver group '{group.Name}' ({group.Id}): {(group.IsDefault ? "default" : string.Join(", ", group.Domains))} -> {string.Join(", ", group.Nameservers)}");
            return 0;
        }, ct));

        var json = new Option<bool>("--json") { Description = "Print JSON" };
        var list = new Command("list", "List nameserver groups") { json };
        list.SetAction((parse, ct) => ServerCli.WithStoreAsync(parse.GetValue(config), defaults, async (store, _) =>
        {
            var groups = await store.ListNameserverGroupsAsync(ct);
            if (parse.GetValue(json))
            {
                Console.Out.WriteLine(JsonSerializer.Serialize(
                    groups.Select(g => new { g.Id, g.Name, g.Nameservers, g.Domains, Default = g.IsDefault, CreatedAt = ServerCli.Iso(g.CreatedAt) }),
                    ServerCli.Json));
                return 0;
            }

            Console.Out.WriteLine($"{"ID",-13} {"NAME",-20} {"DOMAINS",-30} NAMESERVERS");
            foreach (var g in groups)
            {
                Console.Out.WriteLine($"{g.Id,-13} {g.Name,-20} {(g.IsDefault ? "(default)" : string.Join(",", g.Domains)),-30} {string.Join(", ", g.Nameservers)}");
            }

            return 0;
        }, ct));

        var target = new Argument<string>("group") { Description = "Group name or id" };
        var remove = new Command("remove", "Remove a nameserver group") { target };
        remove.SetAction((parse, ct) => ServerCli.WithStoreAsync(parse.GetValue(config), defaults, async (store, _) =>
            await store.DeleteNameserverGroupAsync(parse.GetValue(target)!, ct) ? 0 : ServerCli.Fail($"no nameserver group '{parse.GetValue(target)}'"), ct));

        root.Add(new Command("dns", "The mesh DNS: zone and nameserver groups")
        {
            show,
            new Command("nameservers", "Manage nameserver groups (where agents forward names outside the zone)") { add, list, remove },
        });
    }
}
