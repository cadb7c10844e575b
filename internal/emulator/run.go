package emulator

// Cloud Run Admin API v2 (gRPC), the Services subset keyrotate uses.
//
// Fidelity notes, beyond those of the package doc:
//   - GetService and UpdateService only; UpdateService returns a
//     long-running operation (google.longrunning.Operations/GetOperation on
//     the same port) that is not done when first returned. The operation's
//     metadata and response are the Service, as on the real API.
//   - A change of the template (or force_new_revision) creates a revision
//     named "{service}-{00002}-{xyz}" (or the template's own `revision`).
//   - Revision names are unique within a service and a revision is
//     immutable: an update whose template.revision names an existing
//     revision and would create a new one (a changed template, or
//     force_new_revision) fails with ALREADY_EXISTS "Revision named '…' with
//     different configuration already exists.", on every attempt. gcloud and
//     the console name revisions client-side, so a service they deployed
//     carries its revision's name in template.revision (seed one by setting
//     it: SeedRunService keeps it), and a client that sends the template
//     back changed without clearing it hits this. The code and message are
//     Google's as quoted in public reports: firebase/firebase-tools#10151
//     ("HTTP Error: 409, Revision named '…' with different configuration
//     already exists.") and #10136 (ALREADY_EXISTS revision conflict).
//     A revision name must start with the service's name and a hyphen (also
//     from public reports; the exact wording of that error is not confirmed:
//     INVALID_ARGUMENT here).
//     While the operation runs the service is `reconciling`, its
//     latest_created_revision the new one and traffic still on the old one.
//     The revision becomes ready when the operation finishes: the service's
//     latest_ready_revision, traffic_statuses (100% to LATEST) and
//     terminal_condition Ready follow. With FailRunRevisions the new
//     revision never becomes ready: the operation ends with
//     FAILED_PRECONDITION, terminal_condition is FAILED and the old revision
//     keeps serving.
//   - A pending operation also advances when the service is read
//     (GetService counts as a poll), so that a caller that died while
//     waiting does not leave the service reconciling forever.
//   - An etag in the request that is not the service's current one fails
//     with ABORTED (AIP-154). update_mask is ignored: the request replaces
//     every field that is not output only. allow_missing (create) and
//     validate_only are UNIMPLEMENTED.
//   - Names may use the project id or number; returned names carry the
//     number. An unknown project is PERMISSION_DENIED, as for a project the
//     caller cannot see.

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"cloud.google.com/go/iam/apiv1/iampb"
	"cloud.google.com/go/longrunning/autogen/longrunningpb"
	run "cloud.google.com/go/run/apiv2"
	"cloud.google.com/go/run/apiv2/runpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// runState is the Cloud Run part of the emulator's state, guarded by
// Server.mu.
type runState struct {
	services map[string]*runService // by canonical name, projects/{number}/locations/{l}/services/{s}
	ops      map[string]*runOp      // by name
	failNew  bool                   // new revisions never become ready
}

type runService struct {
	pb     *runpb.Service // Name canonical; never handed out
	revSeq int            // revisions created so far
	// revisions holds the template each revision was created from, by
	// revision name: names are unique and revisions immutable.
	revisions map[string]*runpb.RevisionTemplate
	pending   *runOp // the operation deploying the newest revision
}

type runOp struct {
	name    string
	service string // canonical service name
	polls   int
	done    bool
	fail    bool
	result  *runpb.Service // when done
	err     *status.Status // when done and failed
}

func newRunState() *runState {
	return &runState{services: map[string]*runService{}, ops: map[string]*runOp{}}
}

type runServer struct {
	runpb.UnimplementedServicesServer
	s *Server
}

type runOpsServer struct {
	longrunningpb.UnimplementedOperationsServer
	s *Server
}

// serveRun serves the Cloud Run gRPC API (and its operations) on addr.
func (s *Server) serveRun(addr string) (string, error) {
	return s.serveGRPC(addr, runResource, func(gs *grpc.Server) {
		runpb.RegisterServicesServer(gs, &runServer{s: s})
		longrunningpb.RegisterOperationsServer(gs, &runOpsServer{s: s})
	})
}

// runResource puts the resource of a Cloud Run request in its context.
func runResource(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	var name string
	switch r := req.(type) {
	case *runpb.UpdateServiceRequest:
		name = r.GetService().GetName()
	case interface{ GetName() string }:
		name = r.GetName()
	case interface{ GetResource() string }:
		name = r.GetResource()
	}
	if name != "" {
		ctx = context.WithValue(ctx, resourceKey{}, name)
	}
	return h(ctx, req)
}

// RunClient returns Google's Cloud Run Services client connected to this
// emulator without credentials, with no retries of its own. The caller
// closes it.
func (s *Server) RunClient(ctx context.Context) (*run.ServicesClient, error) {
	c, err := run.NewServicesClient(ctx,
		option.WithEndpoint(s.RunAddr),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
	)
	if err != nil {
		return nil, err
	}
	c.CallOptions = &run.ServicesCallOptions{}
	return c, nil
}

// FailRunRevisions makes every revision created from now on fail to become
// ready (fail true), or become ready again (false).
func (s *Server) FailRunRevisions(fail bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.run.failNew = fail
}

// SeedRunService creates service id in project's location with svc's
// template (containers, env, ...), labels and annotations, its first
// revision ready and serving 100% of traffic. It returns the canonical name.
func (s *Server) SeedRunService(projectID, location, id string, svc *runpb.Service) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pr := s.project(projectID)
	if pr == nil {
		return "", fmt.Errorf("unknown project %q", projectID)
	}
	name := runServiceName(pr, location, id)
	if s.run.services[name] != nil {
		return "", fmt.Errorf("service %s exists", name)
	}
	pb := proto.Clone(svc).(*runpb.Service)
	if pb.Template == nil {
		pb.Template = &runpb.RevisionTemplate{}
	}
	if err := validateTemplate(pb.Template); err != nil {
		return "", err
	}
	now := timestamppb.New(s.Now())
	pb.Name = name
	pb.Uid = newUUID()
	pb.Generation = 1
	pb.CreateTime, pb.UpdateTime = now, now
	pb.Uri = "https://" + id + "-" + strconv.FormatInt(pr.number, 10) + "." + location + ".run.app"
	pb.Urls = []string{pb.Uri}
	pb.Traffic = []*runpb.TrafficTarget{{Type: runpb.TrafficTargetAllocationType_TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST, Percent: 100}}
	if rev := pb.Template.Revision; rev != "" && !strings.HasPrefix(rev, id+"-") {
		return "", fmt.Errorf("revision name %q does not start with %q", rev, id+"-")
	}
	rs := &runService{pb: pb, revisions: map[string]*runpb.RevisionTemplate{}}
	s.run.services[name] = rs
	rev := s.newRevision(rs)
	s.settle(rs, rev, false)
	return name, nil
}

// RunService returns a copy of the service named name (id or number), as
// GetService would.
func (s *Server) RunService(name string) (*runpb.Service, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs, err := s.lookupRunService(name, inspect)
	if err != nil {
		return nil, false
	}
	return proto.Clone(rs.pb).(*runpb.Service), true
}

func runServiceName(pr *project, location, id string) string {
	return "projects/" + strconv.FormatInt(pr.number, 10) + "/locations/" + location + "/services/" + id
}

// lookupRunService finds a service. Call with s.mu held.
func (s *Server) lookupRunService(name, permission string) (*runService, error) {
	v, ok := splitName(name, "projects/*/locations/*/services/*")
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument,
			"Invalid resource name %q: expected projects/{project}/locations/{location}/services/{service}.", name)
	}
	pr := s.project(v[0])
	if pr == nil {
		return nil, permissionDenied("run.", permission, name)
	}
	canon := runServiceName(pr, v[1], v[2])
	rs := s.run.services[canon]
	if rs == nil {
		return nil, status.Errorf(codes.NotFound, "Resource '%s' of kind 'SERVICE' in region '%s' in project '%s' does not exist.", v[2], v[1], v[0])
	}
	return rs, nil
}

// newRevision names a new revision of rs and marks it created. Call with
// s.mu held.
func (s *Server) newRevision(rs *runService) string {
	rs.revSeq++
	id := rs.pb.Name[strings.LastIndex(rs.pb.Name, "/")+1:]
	rev := rs.pb.Template.GetRevision()
	if rev == "" {
		n := s.nextSeq()
		suffix := []byte{byte('a' + n%26), byte('a' + n/26%26), byte('a' + n/676%26)}
		rev = fmt.Sprintf("%s-%05d-%s", id, rs.revSeq, suffix)
	}
	rs.revisions[rev] = proto.Clone(rs.pb.Template).(*runpb.RevisionTemplate)
	rs.pb.LatestCreatedRevision = rev
	rs.pb.Reconciling = true
	rs.pb.TerminalCondition = &runpb.Condition{Type: "Ready", State: runpb.Condition_CONDITION_RECONCILING,
		Message: fmt.Sprintf("Deploying revision %s.", rev), LastTransitionTime: timestamppb.New(s.Now())}
	rs.pb.Etag = fmt.Sprintf(`"%d"`, s.nextSeq())
	return rev
}

// settle finishes the deployment of revision rev: ready and serving, or
// failed with the previous revision still serving. Call with s.mu held.
func (s *Server) settle(rs *runService, rev string, fail bool) {
	now := timestamppb.New(s.Now())
	rs.pb.Reconciling = false
	rs.pb.ObservedGeneration = rs.pb.Generation
	if fail {
		rs.pb.TerminalCondition = &runpb.Condition{Type: "Ready", State: runpb.Condition_CONDITION_FAILED,
			Message: revisionFailedMessage(rev), LastTransitionTime: now, Severity: runpb.Condition_ERROR}
	} else {
		rs.pb.LatestReadyRevision = rev
		rs.pb.TerminalCondition = &runpb.Condition{Type: "Ready", State: runpb.Condition_CONDITION_SUCCEEDED, LastTransitionTime: now}
	}
	var st []*runpb.TrafficTargetStatus
	for _, t := range rs.pb.Traffic {
		r := t.Revision
		if t.Type == runpb.TrafficTargetAllocationType_TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST {
			r = rs.pb.LatestReadyRevision
		}
		st = append(st, &runpb.TrafficTargetStatus{Type: t.Type, Revision: r, Percent: t.Percent, Tag: t.Tag})
	}
	rs.pb.TrafficStatuses = st
	rs.pb.Etag = fmt.Sprintf(`"%d"`, s.nextSeq())
}

func revisionFailedMessage(rev string) string {
	return fmt.Sprintf("Revision '%s' is not ready and cannot serve traffic. The user-provided container failed to start "+
		"and listen on the port defined provided by the PORT=8080 environment variable within the allocated timeout.", rev)
}

// poll advances an operation by one poll. Call with s.mu held.
func (s *Server) pollRunOp(op *runOp) {
	if op.done {
		return
	}
	op.polls++
	if op.polls <= s.opts.OperationPolls {
		return
	}
	op.done = true
	rs := s.run.services[op.service]
	if rs == nil || rs.pending != op {
		return // superseded by a later update, which finished it
	}
	rs.pending = nil
	s.settle(rs, rs.pb.LatestCreatedRevision, op.fail)
	op.result = proto.Clone(rs.pb).(*runpb.Service)
	if op.fail {
		op.err = status.New(codes.FailedPrecondition, revisionFailedMessage(rs.pb.LatestCreatedRevision))
	}
}

// validateTemplate checks what the real API checks of the fields keyrotate
// touches.
func validateTemplate(t *runpb.RevisionTemplate) error {
	if len(t.Containers) == 0 {
		return status.Error(codes.InvalidArgument, "spec.template.spec.containers: a service needs at least one container")
	}
	names := map[string]bool{}
	for i, c := range t.Containers {
		if len(t.Containers) > 1 {
			if c.Name == "" {
				return status.Errorf(codes.InvalidArgument, "spec.template.spec.containers[%d].name: with several containers each needs a name", i)
			}
			if names[c.Name] {
				return status.Errorf(codes.InvalidArgument, "spec.template.spec.containers[%d].name: duplicate container name %q", i, c.Name)
			}
			names[c.Name] = true
		}
		vars := map[string]bool{}
		for j, e := range c.Env {
			where := fmt.Sprintf("spec.template.spec.containers[%d].env[%d]", i, j)
			if e.Name == "" {
				return status.Errorf(codes.InvalidArgument, "%s.name: required", where)
			}
			if vars[e.Name] {
				return status.Errorf(codes.InvalidArgument, "%s.name: duplicate environment variable %q", where, e.Name)
			}
			vars[e.Name] = true
			if src := e.GetValueSource(); src != nil {
				ref := src.GetSecretKeyRef()
				if ref == nil || ref.Secret == "" {
					return status.Errorf(codes.InvalidArgument, "%s.valueSource.secretKeyRef.secret: required", where)
				}
				if ref.Version == "" {
					return status.Errorf(codes.InvalidArgument, "%s.valueSource.secretKeyRef.version: required (a version number or \"latest\")", where)
				}
			}
		}
	}
	return nil
}

// ---- handlers ----

func (r *runServer) GetService(ctx context.Context, req *runpb.GetServiceRequest) (*runpb.Service, error) {
	s := r.s
	if err := s.enter(ctx, "run.GetService"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rs, err := s.lookupRunService(req.GetName(), "run.services.get")
	if err != nil {
		return nil, err
	}
	if rs.pending != nil {
		s.pollRunOp(rs.pending)
	}
	return proto.Clone(rs.pb).(*runpb.Service), nil
}

func (r *runServer) UpdateService(ctx context.Context, req *runpb.UpdateServiceRequest) (*longrunningpb.Operation, error) {
	s := r.s
	if err := s.enter(ctx, "run.UpdateService"); err != nil {
		return nil, err
	}
	if req.GetAllowMissing() || req.GetValidateOnly() {
		return nil, status.Error(codes.Unimplemented, "allow_missing and validate_only are not emulated")
	}
	in := req.GetService()
	if in == nil {
		return nil, status.Error(codes.InvalidArgument, "service: required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rs, err := s.lookupRunService(in.GetName(), "run.services.update")
	if err != nil {
		return nil, err
	}
	if in.Etag != "" && in.Etag != rs.pb.Etag {
		return nil, status.Errorf(codes.Aborted,
			"The etag %s does not match the current etag of service %s: it was changed by someone else. Read it again and retry.", in.Etag, rs.pb.Name)
	}
	if in.Template == nil {
		return nil, status.Error(codes.InvalidArgument, "service.template: required")
	}
	if err := validateTemplate(in.Template); err != nil {
		return nil, err
	}
	changed := !proto.Equal(in.Template, rs.pb.Template) || req.GetForceNewRevision()
	if rev := in.Template.GetRevision(); rev != "" {
		id := rs.pb.Name[strings.LastIndex(rs.pb.Name, "/")+1:]
		if !strings.HasPrefix(rev, id+"-") {
			return nil, status.Errorf(codes.InvalidArgument, "spec.template.metadata.name: revision name %q must start "+
				"with the service name followed by a hyphen (%s-).", rev, id)
		}
		if _, exists := rs.revisions[rev]; exists && changed {
			return nil, status.Errorf(codes.AlreadyExists, "Revision named '%s' with different configuration already exists.", rev)
		}
	}
	// Copy what the caller may set; keep what is output only.
	out := proto.Clone(rs.pb).(*runpb.Service)
	out.Description, out.Labels, out.Annotations = in.Description, in.Labels, in.Annotations
	out.Template = proto.Clone(in.Template).(*runpb.RevisionTemplate)
	if len(in.Traffic) > 0 {
		out.Traffic = in.Traffic
	}
	out.Scaling, out.Ingress = in.Scaling, in.Ingress
	out.Generation++
	out.UpdateTime = timestamppb.New(s.Now())
	out.Etag = fmt.Sprintf(`"%d"`, s.nextSeq())
	rs.pb = out

	pr := s.project(strings.Split(rs.pb.Name, "/")[1])
	loc := strings.Split(rs.pb.Name, "/")[3]
	op := &runOp{name: "projects/" + strconv.FormatInt(pr.number, 10) + "/locations/" + loc + "/operations/" + newUUID(), service: rs.pb.Name}
	s.run.ops[op.name] = op
	if changed {
		s.newRevision(rs)
		op.fail = s.run.failNew
	}
	if rs.pending != nil {
		rs.pending.done, rs.pending.result = true, proto.Clone(rs.pb).(*runpb.Service)
	}
	rs.pending = op
	rs.pb.Reconciling = true
	return s.runOpProto(op)
}

// runOpProto renders op. Call with s.mu held.
func (s *Server) runOpProto(op *runOp) (*longrunningpb.Operation, error) {
	cur := op.result
	if cur == nil {
		cur = s.run.services[op.service].pb
	}
	meta, err := anypb.New(cur)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	out := &longrunningpb.Operation{Name: op.name, Metadata: meta, Done: op.done}
	switch {
	case op.done && op.err != nil:
		out.Result = &longrunningpb.Operation_Error{Error: op.err.Proto()}
	case op.done:
		resp, err := anypb.New(op.result)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		out.Result = &longrunningpb.Operation_Response{Response: resp}
	}
	return out, nil
}

// TestIamPermissions answers which of the permissions the caller has on a
// service: all of them but those DenyPermission took away. It needs no
// permission of its own, as on the real API.
func (r *runServer) TestIamPermissions(ctx context.Context, req *iampb.TestIamPermissionsRequest) (*iampb.TestIamPermissionsResponse, error) {
	s := r.s
	if err := s.enter(ctx, "run.TestIamPermissions"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.lookupRunService(req.GetResource(), inspect); err != nil && status.Code(err) != codes.NotFound {
		return nil, err
	}
	resp := &iampb.TestIamPermissionsResponse{}
	for _, p := range req.GetPermissions() {
		if !s.denied[p] {
			resp.Permissions = append(resp.Permissions, p)
		}
	}
	return resp, nil
}

func (o *runOpsServer) GetOperation(ctx context.Context, req *longrunningpb.GetOperationRequest) (*longrunningpb.Operation, error) {
	s := o.s
	if err := s.enter(ctx, "run.GetOperation"); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	op := s.run.ops[req.GetName()]
	if op == nil {
		return nil, status.Errorf(codes.NotFound, "Operation %s not found.", req.GetName())
	}
	s.pollRunOp(op)
	return s.runOpProto(op)
}
